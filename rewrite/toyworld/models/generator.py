"""The toy-world generator: a small StyleGAN2 (64x64) trained here to draw render(params_from_z(z)).

Its z is the toy world's latent (`rewrite.toyworld.Z_DIM` numbers), so every image it draws has a
known ground truth. In place of a learned mapping network, w is a learned linear map (or small MLP)
of the explicit scene code of z (`rewrite.toyworld.world.code`), so every factor of the scene reaches the
synthesis layers, where rewriting edits. Weights: `rewrite/assets/toy_stylegan2.pt` (`g_ema`,
`latent_avg`, `architecture`), made by `python -m rewrite.toyworld.models.training`; the card beside it
records how.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rewrite.generators.base import GeneratorAdapter
from rewrite.generators.stylegan2 import StyleGAN2Generator
from rewrite.toyworld.world.code import N_FEATURES, SceneCode
from rewrite.toyworld.world.params import Z_DIM, sample_z

TOY_SIZE = 64
TOY_ARCHITECTURE: dict[str, Any] = {"w_dim": 128, "mapping_hidden": 256,
                                    "channels": {4: 128, 8: 128, 16: 96, 32: 64, 64: 32},
                                    "scene_styles": 4, "rgb_from": 32}
"""The committed generator's shape; a checkpoint stores its own under `architecture`."""

LEGACY_ARCHITECTURE: dict[str, Any] = {"scene_styles": None, "rgb_from": 4}
"""What a checkpoint that does not name these keys was trained with (world v2's generator): every layer's
style comes from the scene code, and every resolution's RGB output is added to the image."""


class ToySceneGenerator(StyleGAN2Generator):
    """StyleGAN2 synthesis driven by w = learned map of the scene code of z (z has Z_DIM numbers).

    `scene_styles` (None: all) is how many leading W+ entries take w; the later layers get one learned
    constant style instead, so they cannot know the scene except through their input features. That makes
    the toy generator behave like the GANs rewriting was made for: a part pasted into the features of a
    constant-style layer is drawn by the layers after it. `rgb_from` drops the RGB outputs of the coarser
    resolutions, whose styles would otherwise add the scene's own colours past an edited layer.
    """

    def __init__(self, w_dim: int, mapping_hidden: int, channels: Mapping[int, int],
                 scene_styles: int | None = None, rgb_from: int = 4) -> None:
        super().__init__(TOY_SIZE, w_dim, n_mlp=0, channels={int(r): int(c) for r, c in channels.items()})
        if scene_styles is not None and not 1 <= scene_styles <= self.n_latent:
            raise ValueError(f"scene_styles must be in 1..{self.n_latent} (or null for all), got {scene_styles}")
        if rgb_from not in self.channels:
            raise ValueError(f"rgb_from must be one of the resolutions {sorted(self.channels)}, got {rgb_from}")
        self.z_dim = Z_DIM
        self.scene_styles, self.rgb_from = scene_styles, int(rgb_from)
        head = ([nn.Linear(N_FEATURES, mapping_hidden), nn.LeakyReLU(0.2), nn.Linear(mapping_hidden, w_dim)]
                if mapping_hidden else [nn.Linear(N_FEATURES, w_dim)])
        self.style = nn.Sequential(SceneCode(), *head)
        if scene_styles is not None and scene_styles < self.n_latent:
            self.fine_style = nn.Parameter(torch.zeros(w_dim))  # set to the mean w when training starts

    def latents(self, styles, inject_index=None, truncation=1.0, truncation_latent=None,  # noqa: ANN001
                input_is_latent=False) -> Tensor:
        """The W+ latent, with the constant style in every entry from `scene_styles` on (whatever was passed)."""
        latent = super().latents(styles, inject_index, truncation, truncation_latent, input_is_latent)
        if self.scene_styles is None or self.scene_styles >= self.n_latent:
            return latent
        fine = self.fine_style.expand(latent.shape[0], self.n_latent - self.scene_styles, -1)
        return torch.cat([latent[:, : self.scene_styles], fine], dim=1)

    @torch.no_grad()
    def mean_latent(self, n_latent: int, seed: int = 0) -> Tensor:
        """Mean of w over `n_latent` seeded toy-world z (the truncation centre)."""
        return self.style(sample_z(n_latent, seed).to(self.input.input.device)).mean(0, keepdim=True)


def build_toy_generator(architecture: Mapping[str, Any] | None = None,
                        defaults: Mapping[str, Any] = TOY_ARCHITECTURE) -> ToySceneGenerator:
    """A fresh toy generator of `architecture` (keys of `TOY_ARCHITECTURE`; missing ones from `defaults`)."""
    arch = {**TOY_ARCHITECTURE, **defaults, **(architecture or {})}
    unknown = set(arch) - set(TOY_ARCHITECTURE)
    if unknown:
        raise ValueError(f"unknown toy architecture keys {sorted(unknown)}; expected {sorted(TOY_ARCHITECTURE)}")
    scene_styles = None if arch["scene_styles"] is None else int(arch["scene_styles"])
    return ToySceneGenerator(int(arch["w_dim"]), int(arch["mapping_hidden"]), arch["channels"],
                             scene_styles=scene_styles, rgb_from=int(arch["rgb_from"]))


def toy_checkpoint_path() -> Path:
    return Path(str(resources.files("rewrite") / "assets" / "toy_stylegan2.pt"))


def load_toy_generator_file(path: str | Path) -> tuple[ToySceneGenerator, Tensor | None]:
    """The generator saved at `path` (strict load, weights only) and its `latent_avg` (or None)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"toy generator checkpoint not found: {path} "
                                "(train one with python -m rewrite.toyworld.models.training)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, Mapping) or "g_ema" not in ckpt or "architecture" not in ckpt:
        raise ValueError(f"{path}: not a toy generator checkpoint (expected 'g_ema' and 'architecture' entries; "
                         "checkpoints of the first toy world, with a learned mapping network, no longer load)")
    model = build_toy_generator(ckpt["architecture"], defaults=LEGACY_ARCHITECTURE)
    try:
        model.load_state_dict(ckpt["g_ema"], strict=True)
    except RuntimeError as e:  # missing / unexpected names or other shapes
        first = str(e).splitlines()[1:3]
        raise ValueError(f"{path}: state dict does not match its architecture {ckpt['architecture']}: "
                         + " ".join(line.strip() for line in first)) from e
    return model.eval(), ckpt.get("latent_avg")


def load_toy_stylegan2(checkpoint: str | None = None, truncation: float = 1.0) -> GeneratorAdapter:
    """The committed toy generator (or another toy checkpoint), optionally truncated toward its mean w."""
    model, latent_avg = load_toy_generator_file(checkpoint or toy_checkpoint_path())
    if truncation < 1:
        mean = latent_avg if latent_avg is not None else model.mean_latent(4096)
        model.forward = functools.partial(model.forward, truncation=truncation, truncation_latent=mean)  # type: ignore[method-assign]
    return GeneratorAdapter(model, z_shape=(Z_DIM,), name=f"toy_stylegan2_t{truncation:g}")
