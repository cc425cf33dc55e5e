"""Any StyleGAN2 checkpoint in the rosinality layout (`g_ema`, optional `latent_avg`) as a GeneratorAdapter."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from rewrite.generators.base import GeneratorAdapter
from rewrite.generators.stylegan2 import load_stylegan2_checkpoint


def load_stylegan2(checkpoint: str, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                   channels: Mapping[int, int] | float | None = None, truncation: float = 1.0,
                   key: str = "g_ema", lr_mlp: float = 0.01, name: str | None = None) -> GeneratorAdapter:
    """Load the generator; with truncation < 1, images are drawn toward `latent_avg` (or a computed mean w).

    `lr_mlp` is part of the function, not of the state dict (equalized lr scales at run time): use the
    value the checkpoint was trained with (0.01 for the reference's models).
    """
    model, latent_avg = load_stylegan2_checkpoint(checkpoint, size, style_dim, n_mlp, channel_multiplier,
                                                  key=key, channels=dict(channels) if channels else None,
                                                  lr_mlp=lr_mlp)
    if truncation < 1:
        mean = latent_avg if latent_avg is not None else model.mean_latent(4096)
        base = model.forward

        def truncated(z: Tensor) -> Tensor:
            return base(z, truncation=truncation, truncation_latent=mean)

        model.forward = truncated  # type: ignore[method-assign]
    return GeneratorAdapter(model, z_shape=(style_dim,), name=name or f"stylegan2_{size}_t{truncation:g}")
