"""Captured tensors survive later in-place ops (ReLU(inplace=True), residual `x.add_`) in the generator."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from rewrite.core.site import EditSite, as_map, make_site
from rewrite.generators.base import GeneratorAdapter
from rewrite.generators.stylegan2 import StyleGAN2Generator


def dcgan_like() -> GeneratorAdapter:
    """DCGAN-style blocks whose activations work in place, as in the usual DCGAN generators."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.ConvTranspose2d(8, 6, 4, 1, 0),  # 0
        nn.BatchNorm2d(6),  # 1
        nn.ReLU(inplace=True),  # 2
        nn.Conv2d(6, 6, 3, 1, 1),  # 3
        nn.LeakyReLU(0.2, inplace=True),  # 4
        nn.ConvTranspose2d(6, 3, 4, 2, 1),  # 5
        nn.Tanh(),
    )
    return GeneratorAdapter(model, (8, 1, 1), "dcgan_like")


def linear_first() -> GeneratorAdapter:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6 * 4 * 4), nn.ReLU(inplace=True), nn.Unflatten(1, (6, 4, 4)),
                          nn.ConvTranspose2d(6, 3, 4, 2, 1), nn.Tanh())
    return GeneratorAdapter(model, (8,), "linear_first")


@pytest.mark.parametrize(("make", "layer", "value_at"), [(dcgan_like, "0", "1"), (dcgan_like, "3", None),
                                                         (linear_first, "0", None)])
def test_value_is_read_before_later_inplace_ops(make: Callable[[], GeneratorAdapter], layer: str,
                                                value_at: str | None) -> None:
    adapter = make()
    site = EditSite(adapter, layer, value_at)
    z = adapter.sample_z([0, 1, 2])
    cap = site.capture(z)
    with torch.no_grad():  # the same pieces computed without hooks, each on its own copy
        i = int(layer)
        keys = adapter.model[:i](z.clone())
        layer_out = adapter.model[i](keys.clone())
        value = site.tail(layer_out.clone())
    torch.testing.assert_close(cap.keys, as_map(keys))
    torch.testing.assert_close(cap.layer_out, layer_out)
    torch.testing.assert_close(cap.value, value)
    assert (cap.value < 0).any()  # read before the ReLU that follows it
    torch.testing.assert_close(site.value_forward(cap, site.weight), cap.value)


class OverwritesInput(nn.Module):
    """`layer(x)`, after which the block overwrites x in place (as a residual `x.add_` would)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        y = self.layer(x)
        return y + x.mul_(-3.0)


@pytest.mark.parametrize(("layer", "z_shape"), [(nn.Conv2d(6, 6, 3, 1, 1), (6, 4, 4)),
                                                (nn.ConvTranspose2d(6, 6, 3, 1, 1), (6, 4, 4)),
                                                (nn.Linear(6, 6), (6,))])
def test_keys_are_read_before_an_inplace_op_on_the_layer_input(layer: nn.Module, z_shape: tuple[int, ...]) -> None:
    adapter = GeneratorAdapter(nn.Sequential(nn.Tanh(), OverwritesInput(layer)), z_shape, "overwrites_input")
    site = EditSite(adapter, "1.layer")
    z = adapter.sample_z([0, 1])
    cap = site.capture(z)
    torch.testing.assert_close(cap.keys, as_map(torch.tanh(z)))
    torch.testing.assert_close(cap.layer_out, layer(torch.tanh(z)))


def test_modulated_site_value_survives_an_inplace_op_downstream() -> None:
    torch.manual_seed(0)
    adapter = GeneratorAdapter(StyleGAN2Generator(16, 8, 2, channels={4: 8, 8: 8, 16: 8}), (8,), "sg2_tiny")
    site = make_site(adapter, "conv1")

    def negate_input(_m: nn.Module, args: tuple[Tensor, ...]) -> None:  # to_rgb1 reads conv1's output
        args[0].neg_()

    handle = adapter.model.to_rgb1.register_forward_pre_hook(negate_input)
    try:
        cap = site.capture(adapter.sample_z([0, 1]))
    finally:
        handle.remove()
    torch.testing.assert_close(site.value_forward(cap, site.weight), cap.value)
