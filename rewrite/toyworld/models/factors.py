"""Which scene factors a toy generator draws: flip one coordinate of z and compare image changes.

`follow`: flip the sign of one coordinate of z, and project the generator's image change onto the
renderer's true change: 1 = it changes the image exactly as the scene says, 0 = it ignores the
factor (or changes something else); NaN where the flip changes no rendered pixel of the sample.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rewrite.generators.base import GeneratorAdapter
from rewrite.toyworld.world.params import Z_DIM, Z_FIELDS, params_from_z
from rewrite.toyworld.world.render import render


@torch.no_grad()
def follow(adapter: GeneratorAdapter, n: int = 64, seed: int = 7) -> Tensor:
    """(Z_DIM,) projection of the generator's image change on the true change, one z field flipped at a time."""
    z = torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(seed))
    fake0 = (adapter.generate(z).clamp(-1, 1) + 1) / 2
    true0, _ = render(params_from_z(z))
    out = torch.zeros(Z_DIM, dtype=torch.float64)
    for i in range(Z_DIM):
        flipped = z.clone()
        flipped[:, i] = -flipped[:, i]
        d_fake = (adapter.generate(flipped).clamp(-1, 1) + 1) / 2 - fake0
        d_true = render(params_from_z(flipped))[0] - true0
        energy = d_true.double().pow(2).sum()
        out[i] = (d_fake.double() * d_true).sum() / energy if energy > 0 else float("nan")
    return out


def factor_table(adapter: GeneratorAdapter) -> list[tuple[str, float]]:
    """(z field, follow) for every field, in `Z_FIELDS` order."""
    fol = follow(adapter)
    return [(name, float(fol[i])) for i, name in enumerate(Z_FIELDS)]
