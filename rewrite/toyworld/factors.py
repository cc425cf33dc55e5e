"""Which scene factors a toy generator has learned: readable from w, and followed in the image.

Two per-factor figures (one per z field of `rewrite.toyworld.params.Z_FIELDS`):

* `readout_r2`: R² of a least-squares linear read-out of z_hat = z / RMS(z) from w = mapping(z), on
  held-out samples. Linear, because the synthesis layers read w through affine style layers. An
  affine mapping scores 1, a freshly initialised leaky-ReLU mapping about 0.3-0.6 on every field;
  a factor near 0 has been dropped by the mapping network, and the synthesis cannot draw it
  whatever the image loss says.
* `follow`: flip the sign of one coordinate of z, and project the generator's image change onto the
  renderer's true change: 1 = it changes the image exactly as the scene says, 0 = it ignores the
  factor (or changes something else); NaN where the flip changes no rendered pixel of the sample.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rewrite.generators.base import GeneratorAdapter
from rewrite.generators.stylegan2 import StyleGAN2Generator
from rewrite.toyworld.params import Z_DIM, Z_FIELDS, params_from_z, z_hat
from rewrite.toyworld.render import render


@torch.no_grad()
def readout_r2(model: StyleGAN2Generator, n: int = 20000, seed: int = 1, train_share: float = 0.75) -> Tensor:
    """(Z_DIM,) held-out R² of the best linear map w -> z_hat, fitted in float64 on the first share."""
    z = torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(seed))
    w = torch.cat([model.style(c) for c in z.split(4096)]).double()
    target = z_hat(z.double())
    k = int(n * train_share)
    weight, bias = linear_readout(w[:k], target[:k])
    resid = target[k:] - (w[k:] @ weight.T + bias)
    return 1 - resid.pow(2).mean(0) / target[k:].var(0)


def linear_readout(w: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares (weight, bias) of target ≈ w @ weightᵀ + bias, in float64 (an nn.Linear's layout)."""
    feats = torch.cat([w.double(), torch.ones(len(w), 1, dtype=torch.float64, device=w.device)], 1)
    coef = torch.linalg.lstsq(feats, target.double()).solution
    return coef[:-1].T, coef[-1]


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


def factor_table(adapter: GeneratorAdapter) -> list[tuple[str, float, float]]:
    """(z field, readout_r2, follow) for every field, in `Z_FIELDS` order."""
    r2, fol = readout_r2(adapter.model), follow(adapter)
    return [(name, float(r2[i]), float(fol[i])) for i, name in enumerate(Z_FIELDS)]
