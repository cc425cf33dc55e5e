"""The factor probe of rewrite.toyworld.models.factors, on generators whose answer is known by construction."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rewrite.generators.base import GeneratorAdapter
from rewrite.toyworld import Z_DIM, params_from_z, render
from rewrite.toyworld.models.factors import follow


class _Oracle(nn.Module):
    """Draws exactly the render: follows every factor."""

    def forward(self, z: Tensor) -> Tensor:
        return render(params_from_z(z))[0] * 2 - 1


class _Blind(nn.Module):
    """Ignores z: follows nothing."""

    def forward(self, z: Tensor) -> Tensor:
        return torch.zeros(len(z), 3, 64, 64)


def test_follow_is_one_for_the_renderer_and_zero_for_a_blind_generator() -> None:
    oracle = follow(GeneratorAdapter(_Oracle(), (Z_DIM,), "oracle"), n=16)
    blind = follow(GeneratorAdapter(_Blind(), (Z_DIM,), "blind"), n=16)
    visible = ~oracle.isnan()  # some window switches may be in none of 16 scenes
    assert visible.sum() >= Z_DIM - 8 and oracle.isnan().equal(blind.isnan())
    assert torch.allclose(oracle[visible], torch.ones(int(visible.sum()), dtype=torch.float64), atol=1e-6)
    assert blind[visible].abs().max() == 0
