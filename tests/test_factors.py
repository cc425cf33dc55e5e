"""The factor probes of rewrite.toyworld.factors, on generators whose answer is known by construction."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rewrite.generators.base import GeneratorAdapter
from rewrite.generators.toy_stylegan2 import build_toy_stylegan2
from rewrite.toyworld import Z_DIM, params_from_z, render
from rewrite.toyworld.factors import follow, readout_r2


class _Oracle(nn.Module):
    """Draws exactly the render: follows every factor."""

    def forward(self, z: Tensor) -> Tensor:
        return render(params_from_z(z))[0] * 2 - 1


class _Blind(nn.Module):
    """Ignores z: follows nothing."""

    def forward(self, z: Tensor) -> Tensor:
        return torch.zeros(len(z), 3, 64, 64)


def test_readout_of_a_fresh_mapping_is_partial_and_of_a_collapsed_one_near_zero() -> None:
    torch.manual_seed(0)
    g = build_toy_stylegan2(n_mlp=2, channels={4: 8, 8: 8, 16: 8, 32: 8, 64: 8})
    assert readout_r2(g, n=4000).min() > 0.25  # a random leaky-ReLU MLP keeps every field partly readable
    with torch.no_grad():
        g.style[-1].weight[3:] = 0  # the last layer now writes only 3 of its outputs
    r2 = readout_r2(g, n=4000)
    assert (r2 < 0.1).sum() >= Z_DIM - 6  # at most ~3 fields (plus chance) survive in 3 dimensions


def test_follow_is_one_for_the_renderer_and_zero_for_a_blind_generator() -> None:
    oracle = follow(GeneratorAdapter(_Oracle(), (Z_DIM,), "oracle"), n=16)
    blind = follow(GeneratorAdapter(_Blind(), (Z_DIM,), "blind"), n=16)
    visible = ~oracle.isnan()  # third-row windows may be in none of 16 scenes
    assert visible.sum() >= Z_DIM - 8 and oracle.isnan().equal(blind.isnan())
    assert torch.allclose(oracle[visible], torch.ones(int(visible.sum()), dtype=torch.float64), atol=1e-6)
    assert blind[visible].abs().max() == 0
