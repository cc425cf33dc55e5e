"""The toy-world generator: a small StyleGAN2 (64x64) trained here to draw render(params_from_z(z)).

Its z is the toy world's latent (`rewrite.toyworld.Z_DIM` numbers), so every image it draws has a
known ground truth. Weights: `rewrite/assets/toy_stylegan2.pt` (rosinality layout: `g_ema`,
`latent_avg`), made by `experiments/train_toy_generator.py`; the card beside it records how.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from rewrite.generators.base import GeneratorAdapter
from rewrite.generators.stylegan2 import StyleGAN2Generator
from rewrite.generators.stylegan2_adapter import load_stylegan2
from rewrite.toyworld import Z_DIM

TOY_SIZE = 64
TOY_N_MLP = 4
TOY_CHANNELS = {4: 128, 8: 128, 16: 96, 32: 64, 64: 32}
TOY_LR_MLP = 1.0  # the mapping must learn sharp functions of z (thresholds), so it trains at full lr


def build_toy_stylegan2(lr_mlp: float = TOY_LR_MLP, n_mlp: int = TOY_N_MLP,
                        channels: Mapping[int, int] | None = None) -> StyleGAN2Generator:
    """A fresh toy generator; `n_mlp` / `channels` give a deeper or wider variant (default: the committed shape)."""
    return StyleGAN2Generator(TOY_SIZE, Z_DIM, n_mlp, channels=dict(channels or TOY_CHANNELS), lr_mlp=lr_mlp)


def toy_architecture(state: Mapping[str, Tensor]) -> tuple[int, dict[int, int]]:
    """(n_mlp, channels per resolution) of a toy generator's state dict, read from its tensor shapes.

    So a wider or deeper variant trained by `experiments/train_toy_generator.py` loads without code changes.
    """
    n_mlp = sum(1 for k in state if re.fullmatch(r"style\.\d+\.weight", k))
    if "input.input" not in state or n_mlp == 0:
        raise ValueError("not a StyleGAN2 generator state dict (no input.input or style.*.weight)")
    channels = {4: int(state["input.input"].shape[1])}
    j = 0  # convs.2j is the upsampling conv of resolution 8·2^j; its weight is (1, out, in, k, k)
    while f"convs.{2 * j}.conv.weight" in state:
        channels[8 * 2**j] = int(state[f"convs.{2 * j}.conv.weight"].shape[1])
        j += 1
    if max(channels) != TOY_SIZE:
        raise ValueError(f"the state dict draws {max(channels)}x{max(channels)} images, "
                         f"the toy world is {TOY_SIZE}x{TOY_SIZE}")
    return n_mlp, channels


def toy_checkpoint_path() -> Path:
    return Path(str(resources.files("rewrite") / "assets" / "toy_stylegan2.pt"))


def load_toy_stylegan2(checkpoint: str | None = None, truncation: float = 1.0) -> GeneratorAdapter:
    """The committed toy generator (or another toy checkpoint, any widths / depth), optionally truncated."""
    path = Path(checkpoint) if checkpoint else toy_checkpoint_path()
    if not path.is_file():
        raise FileNotFoundError(f"toy generator checkpoint not found: {path} "
                                "(train one with experiments/train_toy_generator.py)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    n_mlp, channels = toy_architecture(ckpt.get("g_ema", ckpt))
    return load_stylegan2(str(path), TOY_SIZE, Z_DIM, n_mlp, channels=channels, truncation=truncation,
                          lr_mlp=TOY_LR_MLP, name=f"toy_stylegan2_t{truncation:g}")
