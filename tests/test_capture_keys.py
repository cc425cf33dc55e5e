"""Keys for statistics: the same keys as a full capture, from a forward pass that stops at the layer."""

from __future__ import annotations

import pytest
import torch

from rewrite.core.site import EditSite, make_site
from rewrite.generators.tiny import load_tiny
from tests.test_modulated_site import tiny_stylegan2


def _calls_after(module: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize(("layer", "later"), [("main.0", "main.4"), ("main.4", "main.10"), ("main.7", "main.10")])
def test_keys_match_a_full_capture_and_the_pass_stops(layer: str, later: str) -> None:
    adapter = load_tiny()
    site = EditSite(adapter, layer)
    z = adapter.sample_z([0, 1, 2])
    full = site.capture(z).keys
    calls = _calls_after(adapter.module(later))
    keys = site.capture_keys(z)
    assert torch.equal(keys, full)
    assert calls == []  # nothing after the layer ran
    adapter.generate(z)
    assert calls == [1]  # and the model still runs whole afterwards (the hook was removed)


@pytest.mark.parametrize("layer", ["conv1", "convs.2"])
def test_modulated_keys_match_and_the_pass_stops(layer: str) -> None:
    adapter = tiny_stylegan2()
    site = make_site(adapter, layer)
    z = adapter.sample_z([0, 1])
    calls = _calls_after(adapter.module("to_rgbs.1"))
    torch.testing.assert_close(site.capture_keys(z), site.capture(z).keys, rtol=0, atol=0)
    assert len(calls) == 1  # only the full capture reached the last block


def test_a_layer_the_forward_never_reaches_is_a_clear_error() -> None:
    adapter = load_tiny()
    site = EditSite(adapter, "main.4")
    adapter.model.forward = lambda z: z  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="never reached the edited layer"):
        site.capture_keys(adapter.sample_z([0]))
