"""Rewriting a StyleGAN2 modulated conv through the adapter: keys x·s, weight, value after demodulation."""

from __future__ import annotations

import pytest
import torch

from rewrite.core.problem import build_problem
from rewrite.core.request import EditRequest
from rewrite.core.site import make_site
from rewrite.core.stats import collect_key_moment
from rewrite.generators.base import GeneratorAdapter
from rewrite.generators.stylegan2 import StyleGAN2Generator
from rewrite.generators.stylegan2_site import ModulatedConvSite
from rewrite.strategies.closed_form import ClosedForm
from rewrite.strategies.rank_one import RankOne


def tiny_stylegan2() -> GeneratorAdapter:
    torch.manual_seed(0)
    model = StyleGAN2Generator(16, 8, 2, channels={4: 8, 8: 8, 16: 8})
    return GeneratorAdapter(model, z_shape=(8,), name="sg2_tiny")


@pytest.mark.parametrize("layer", ["conv1", "convs.0", "convs.3"])
def test_site_pieces_match_the_model(layer: str) -> None:
    adapter = tiny_stylegan2()
    site = make_site(adapter, layer)
    assert isinstance(site, ModulatedConvSite) and site.weight_name == f"{layer}.conv.weight"
    z = adapter.sample_z([0, 1])
    cap = site.capture(z)
    torch.testing.assert_close(site.value_forward(cap, site.weight), cap.value)
    d, _ = torch.linalg.qr(torch.randn(site.key_dim, 2))
    lam = torch.randn(1, site.weight.shape[1], 2, *site.taps) * 0.3
    w1 = site.weight + site.expand(lam, d)
    linear = site.layer_forward(cap.keys, w1) - site.layer_forward(cap.keys, site.weight)
    torch.testing.assert_close(site.delta_forward(site.project_keys(cap.keys, d), lam), linear, rtol=1e-4, atol=1e-5)
    # The low-rank value equals running the real model with its weight replaced.
    expected = site.lowrank_value(cap, site.project_keys(cap.keys, d), lam, d)
    with adapter.edited({site.weight_name: w1.detach()}):
        actual = site.capture(z).value
    torch.testing.assert_close(expected, actual, rtol=1e-4, atol=1e-5)


def test_value_at_elsewhere_is_refused() -> None:
    with pytest.raises(ValueError, match="value_at"):
        make_site(tiny_stylegan2(), "convs.1", "convs.2")


def test_strategies_edit_a_stylegan2_layer() -> None:
    adapter = tiny_stylegan2()
    site = make_site(adapter, "convs.2")  # 16x16 upsampling conv
    c = collect_key_moment(site, 32, 16, seed=0, progress=False).moment
    req = EditRequest.from_dict({"copy": {"seed": 1, "box": [2, 2, 8, 8]}, "paste": {"seed": 2, "box": [8, 8, 14, 14]},
                                 "context": [{"seed": 3, "box": [4, 4, 12, 12]}]})
    p = build_problem(site, req, c)
    start = float(p.value_loss(site.value_forward(p.target, site.weight)))
    for strategy in (ClosedForm(rank=2), RankOne(rank=2)):
        w = strategy.run(p).weights[site.weight_name]
        assert w.shape == site.weight.shape
        assert float(p.value_loss(site.value_forward(p.target, w))) < start, strategy.name


def test_adapter_loads_a_checkpoint_with_truncation(tmp_path) -> None:  # noqa: ANN001
    from rewrite.generators.stylegan2_adapter import load_stylegan2

    src = tiny_stylegan2()
    path = tmp_path / "g.pt"
    torch.save({"g_ema": src.model.state_dict()}, path)  # no latent_avg: the mean w is computed
    channels = {4: 8, 8: 8, 16: 8}
    loaded = load_stylegan2(str(path), 16, 8, 2, channels=channels)
    z = loaded.sample_z([0, 1, 2])
    torch.testing.assert_close(loaded.generate(z), src.generate(z))
    collapsed = load_stylegan2(str(path), 16, 8, 2, channels=channels, truncation=0.0).generate(z)
    torch.testing.assert_close(collapsed[0], collapsed[1])
    assert not torch.allclose(loaded.generate(z)[0], loaded.generate(z)[1])
