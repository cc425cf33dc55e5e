"""Can a toy generator's synthesis draw a scene at all? Fit a free W+ latent to its render (weights fixed).

Used by `experiments/invert_toy_generator.py`: what the fitted images still lack, no feature of the
synthesis draws; what they gain over the generator's own w, the map from the scene code fails to ask for.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rewrite.generators.stylegan2 import StyleGAN2Generator
from rewrite.toyworld.world.labels import CLASSES


def fit_w_plus(g: StyleGAN2Generator, w: Tensor, target: Tensor, steps: int, lr: float) -> Tensor:
    """The W+ latent (N, n_latent, style_dim), started at `w` everywhere, that minimises L1 to `target` in [-1, 1]."""
    w_plus = w[:, None].repeat(1, g.n_latent, 1).requires_grad_(True)
    opt = torch.optim.Adam([w_plus], lr=lr)
    for _ in range(steps):
        loss = (g(w_plus, input_is_latent=True) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w_plus.detach()


def class_l1(images: Tensor, truth: Tensor, labels: Tensor) -> dict[str, float]:
    """Mean absolute error over the pixels of each class present (images in [0, 1])."""
    err = (images - truth).abs().mean(1)
    return {c: float(err[labels == i].mean()) for i, c in enumerate(CLASSES) if (labels == i).any()}
