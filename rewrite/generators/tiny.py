"""A tiny randomly initialised generator (16x16) for fast tests.

It contains every layer type the library supports (Linear, ConvTranspose2d, Conv2d) with
BatchNorm + ReLU after each, so every code path runs in milliseconds.
"""

from __future__ import annotations

import torch
from torch import nn

from rewrite.generators.base import GeneratorAdapter


def tiny_generator(z_dim: int = 16, width: int = 16, seed: int = 0) -> nn.Module:
    """Module names: main.0 Linear, main.4 ConvTranspose2d, main.7 Conv2d, main.10 ConvTranspose2d."""
    torch.manual_seed(seed)
    model = nn.Module()
    model.main = nn.Sequential(
        nn.Linear(z_dim, width * 4 * 4),
        nn.Unflatten(1, (width, 4, 4)),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.ConvTranspose2d(width, width, 4, 2, 1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, 1, 1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.ConvTranspose2d(width, 3, 4, 2, 1),
        nn.Tanh(),
    )
    with torch.no_grad():  # non-trivial BatchNorm statistics so eval mode is not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.forward = model.main.forward  # type: ignore[method-assign]
    return model


def load_tiny(z_dim: int = 16, width: int = 16, seed: int = 0, checkpoint: str | None = None) -> GeneratorAdapter:
    model = tiny_generator(z_dim, width, seed)
    if checkpoint:
        from rewrite.core.checkpoints import load_state_dict_file

        load_state_dict_file(model, checkpoint)
    return GeneratorAdapter(model, z_shape=(z_dim,), name=f"tiny_w{width}_s{seed}")
