"""The toy-world generator: a small StyleGAN2 (64x64) trained here to draw render(params_from_z(z)).

Its z is the toy world's latent (`rewrite.toyworld.Z_DIM` numbers), so every image it draws has a
known ground truth. Weights: `rewrite/assets/toy_stylegan2.pt` (rosinality layout: `g_ema`,
`latent_avg`), made by `experiments/train_toy_generator.py`; the card beside it records how.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rewrite.generators.base import GeneratorAdapter
from rewrite.generators.stylegan2 import StyleGAN2Generator
from rewrite.generators.stylegan2_adapter import load_stylegan2
from rewrite.toyworld import Z_DIM

TOY_SIZE = 64
TOY_N_MLP = 4
TOY_CHANNELS = {4: 128, 8: 128, 16: 96, 32: 64, 64: 32}
TOY_LR_MLP = 1.0  # the mapping must learn sharp functions of z (thresholds), so it trains at full lr


def build_toy_stylegan2(lr_mlp: float = TOY_LR_MLP) -> StyleGAN2Generator:
    return StyleGAN2Generator(TOY_SIZE, Z_DIM, TOY_N_MLP, channels=TOY_CHANNELS, lr_mlp=lr_mlp)


def toy_checkpoint_path() -> Path:
    return Path(str(resources.files("rewrite") / "assets" / "toy_stylegan2.pt"))


def load_toy_stylegan2(checkpoint: str | None = None, truncation: float = 1.0) -> GeneratorAdapter:
    """The committed toy generator (or a checkpoint of the same shape), optionally truncated."""
    path = Path(checkpoint) if checkpoint else toy_checkpoint_path()
    if not path.is_file():
        raise FileNotFoundError(f"toy generator checkpoint not found: {path} "
                                "(train one with experiments/train_toy_generator.py)")
    return load_stylegan2(str(path), TOY_SIZE, Z_DIM, TOY_N_MLP, channels=TOY_CHANNELS, truncation=truncation,
                          lr_mlp=TOY_LR_MLP, name=f"toy_stylegan2_t{truncation:g}")
