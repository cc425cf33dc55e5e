"""Edit sites: layer lookup, supported types, the functional value path, low-rank algebra, checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rewrite.core.checkpoints import load_state_dict_file
from rewrite.core.site import SITE_TYPES, EditSite, make_site
from rewrite.generators.base import GeneratorAdapter
from rewrite.generators.dcgan_face import dcgan_generator
from rewrite.generators.tiny import load_tiny, tiny_generator


@pytest.mark.parametrize(("layer", "value_at"), [("main.0", "main.3"), ("main.4", "main.6"), ("main.7", "main.9"),
                                                 ("main.10", "main.11"), ("main.7", None)])
def test_value_path_reproduces_the_model(layer: str, value_at: str | None) -> None:
    site = EditSite(load_tiny(), layer, value_at)
    cap = site.capture(site.adapter.sample_z([0, 1]))
    torch.testing.assert_close(site.value_forward(cap, site.weight), cap.value)
    # ΔW = Λ Dᵀ acts through the projected keys exactly as through the full weight.
    d, _ = torch.linalg.qr(torch.randn(site.key_dim, 2))
    shape = list(site.weight.shape)
    shape[site.in_axis] = 2
    lam = torch.randn(shape)
    full = site.layer_forward(cap.keys, site.weight + site.expand(lam, d)) - site.layer_forward(cap.keys, site.weight)
    torch.testing.assert_close(site.delta_forward(site.project_keys(cap.keys, d), lam), full, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(site.coordinates(site.expand(lam, d), d), lam, rtol=1e-4, atol=1e-5)
    dw = torch.randn_like(site.weight)
    proj = site.project_weight(dw, d)
    torch.testing.assert_close(site.project_weight(proj, d), proj, rtol=1e-4, atol=1e-6)


def test_unknown_layer_suggests_names() -> None:
    with pytest.raises(KeyError, match="main.4"):
        EditSite(load_tiny(), "main.44")


def test_unsupported_layers_are_refused() -> None:
    with pytest.raises(TypeError, match="BatchNorm2d.*supported layer types"):
        EditSite(load_tiny(), "main.5")
    grouped = GeneratorAdapter(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), (4, 8, 8), "g")
    with pytest.raises(TypeError, match="groups"):
        EditSite(grouped, "0")
    with pytest.raises(ValueError, match="comes before"):
        EditSite(load_tiny(), "main.7", "main.6")


def test_checkpoint_errors(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_tiny(checkpoint=str(bad))
    other = tmp_path / "other.pt"
    torch.save(tiny_generator(width=8).state_dict(), other)
    with pytest.raises(ValueError, match="wrong shape"):
        load_tiny(checkpoint=str(other))
    face = tmp_path / "face.tar"
    torch.save({"netG_state_dict": {"main.0.weight": torch.zeros(1)}}, face)
    with pytest.raises(ValueError, match="missing"):
        load_state_dict_file(dcgan_generator(), face, key="netG_state_dict")
    good = tmp_path / "good.pt"
    torch.save(tiny_generator(seed=5).state_dict(), good)
    a = load_tiny(checkpoint=str(good))
    assert torch.equal(a.model.main[0].weight, tiny_generator(seed=5).main[0].weight)


def test_face_model_loads_offline() -> None:
    from rewrite.generators.dcgan_face import load_dcgan_face

    g = load_dcgan_face()
    x = g.generate(g.sample_z([35, 57]))
    assert x.shape == (2, 3, 64, 64) and x.abs().max() <= 1
    assert torch.equal(g.sample_z([35]), g.sample_z([35]))


def test_relative_value_at_names_the_module_n_places_on() -> None:
    from rewrite.generators.tiny import load_tiny

    adapter = load_tiny()
    assert EditSite(adapter, "main.4", "+2").value_at == "main.6"
    assert EditSite(adapter, "main.4", "+0").value_at == "main.4"
    with pytest.raises(ValueError, match="relative value_at"):
        EditSite(adapter, "main.4", "+x")


def test_make_site_builds_the_site_registered_for_the_layer_type(monkeypatch: pytest.MonkeyPatch) -> None:
    class MySite(EditSite):
        pass

    monkeypatch.setitem(SITE_TYPES, nn.ConvTranspose2d, MySite)
    adapter = load_tiny()
    assert type(make_site(adapter, "main.4", "main.6")) is MySite
    assert type(make_site(adapter, "main.7")) is EditSite  # a Conv2d: nothing registered, the plain site


def test_site_module_knows_no_model_family() -> None:
    code = ("import sys, rewrite.core.site; "
            "assert not [m for m in sys.modules if m.startswith('rewrite.generators')], sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    from rewrite.generators.stylegan2 import StyledConv

    assert SITE_TYPES[StyledConv].__name__ == "ModulatedConvSite"  # the family registered its own site
