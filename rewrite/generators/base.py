"""The generator adapter: latents from seeds, images in [-1, 1], layers by dotted name.

The adapter never copies or forks the wrapped model; everything else in the library reaches
into it through forward hooks (see `rewrite.core.site`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from rewrite.core.files import state_fingerprint


def seed_latents(seeds: Sequence[int], z_shape: Sequence[int]) -> Tensor:
    """One latent per seed, each from its own generator, so a seed always means the same image."""
    return torch.stack([torch.randn(tuple(z_shape), generator=torch.Generator().manual_seed(int(s))) for s in seeds])


class GeneratorAdapter:
    """Wraps a frozen generator `model(z) -> image in [-1, 1]` whose latents are `z_shape` normals."""

    def __init__(self, model: nn.Module, z_shape: Sequence[int], name: str) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.z_shape = tuple(int(s) for s in z_shape)
        self.name = name
        self._resolution: int | None = None

    # --- latents and images -------------------------------------------------------------
    def sample_z(self, seeds: Sequence[int]) -> Tensor:
        """One latent per seed (see `seed_latents`), on the model's device."""
        return seed_latents(seeds, self.z_shape).to(self.device)

    def sample_z_stream(self, n: int, seed: int) -> Tensor:
        """`n` latents from one seeded stream (for statistics: cheap and reproducible)."""
        g = torch.Generator().manual_seed(int(seed))
        return torch.randn((n, *self.z_shape), generator=g).to(self.device)

    @torch.no_grad()
    def generate(self, z: Tensor, batch_size: int = 64) -> Tensor:
        """Images in [-1, 1], batched so large requests do not blow memory."""
        return torch.cat([self.model(z[i : i + batch_size]) for i in range(0, len(z), batch_size)])

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def resolution(self) -> int:
        """Side of the (square) output image, found once by a forward pass."""
        if self._resolution is None:
            img = self.generate(self.sample_z([0]))
            if img.dim() != 4 or img.shape[1] != 3 or img.shape[2] != img.shape[3]:
                raise ValueError(f"generator {self.name!r} must return (N, 3, S, S) images, got {tuple(img.shape)}")
            self._resolution = int(img.shape[-1])
        return self._resolution

    # --- layers -------------------------------------------------------------------------
    def module(self, name: str) -> nn.Module:
        """The submodule called `name`, or a clear error that suggests the closest names."""
        modules = dict(self.model.named_modules())
        if name not in modules or name == "":
            close = difflib.get_close_matches(name, [n for n in modules if n], n=5)
            hint = f" Did you mean one of {close}?" if close else ""
            raise KeyError(f"generator {self.name!r} has no layer named {name!r}.{hint}")
        return modules[name]

    def layer_names(self) -> list[str]:
        return [n for n, _ in self.model.named_modules() if n]

    def parameter_name(self, module: nn.Module, attr: str = "weight") -> str:
        for n, m in self.model.named_modules():
            if m is module:
                return f"{n}.{attr}" if n else attr
        raise KeyError("module is not part of this generator")

    # --- weights ------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 over every tensor of the state dict: names statistics caches by the weights."""
        return state_fingerprint(self.model.state_dict())

    def state_copy(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def load_weights(self, weights: dict[str, Tensor]) -> None:
        """Overwrite some tensors of the state dict in place (names must exist, shapes must match)."""
        state = self.model.state_dict()
        for k, v in weights.items():
            if k not in state:
                raise KeyError(f"generator {self.name!r} has no tensor {k!r}")
            if state[k].shape != v.shape:
                raise ValueError(f"{k}: shape {tuple(v.shape)} does not match {tuple(state[k].shape)}")
            state[k].copy_(v)

    @contextmanager
    def edited(self, weights: dict[str, Tensor]) -> Iterator[GeneratorAdapter]:
        """Temporarily apply `weights`; the original tensors come back on exit."""
        saved = {k: self.model.state_dict()[k].detach().clone() for k in weights}
        self.load_weights(weights)
        try:
            yield self
        finally:
            self.load_weights(saved)
