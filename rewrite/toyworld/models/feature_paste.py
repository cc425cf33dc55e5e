"""Feature copy/paste as a training signal: paste one scene's features into another's at a synthesis layer
and ask for the pixel paste of their renders.

Why: rewriting generalizes a feature copy/paste, so it can only draw what a feature paste at the edited
layer draws. A generator trained only on whole scenes redraws the neighbourhood of a pasted patch (the
paste ceiling stays far below the pixel paste's score); trained with this term, the layers after the
paste learn to draw whatever their input features say, with the seams where the features change.
The boxes are random (sizes and places drawn per sample), never the benchmark's requests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Paste:
    """Copy the box at (ay, ax) of sample `src` into the box at (by, bx) of sample `dst`, both h x w cells."""

    dst: int
    src: int
    ay: int
    ax: int
    by: int
    bx: int
    h: int
    w: int

    def scaled(self, f: int) -> Paste:
        """The same paste on a grid `f` times finer (feature cells -> image pixels)."""
        return Paste(self.dst, self.src, self.ay * f, self.ax * f, self.by * f, self.bx * f, self.h * f, self.w * f)


def draw_pastes(batch: int, count: int, res: int, min_cells: int, max_cells: int,
                generator: torch.Generator) -> list[Paste]:
    """`count` pastes into the first samples of a batch, each from the next sample, boxes of random size and place."""
    if not 1 <= min_cells <= max_cells <= res:
        raise ValueError(f"paste sizes must satisfy 1 <= min_cells <= max_cells <= {res} (the layer's size), "
                         f"got {min_cells}..{max_cells}")
    if batch < 2 and count:
        raise ValueError("feature pastes need a batch of at least 2 (a sample pastes from another)")

    def rand(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (), generator=generator))

    pastes = []
    for i in range(min(count, batch)):
        h, w = rand(min_cells, max_cells), rand(min_cells, max_cells)
        pastes.append(Paste(i, (i + 1) % batch, rand(0, res - h), rand(0, res - w), rand(0, res - h),
                            rand(0, res - w), h, w))
    return pastes


def apply_pastes(x: Tensor, pastes: Sequence[Paste]) -> Tensor:
    """A copy of `x` (N, C, H, W) with every paste done (sources read from `x` itself, so pastes do not chain)."""
    out = x.clone()
    for p in pastes:
        out[p.dst, :, p.by:p.by + p.h, p.bx:p.bx + p.w] = x[p.src, :, p.ay:p.ay + p.h, p.ax:p.ax + p.w]
    return out


@contextmanager
def pasted_at(layer: nn.Module, pastes: Sequence[Paste]) -> Iterator[None]:
    """While active, the output of `layer` (a synthesis layer) has the pastes done (gradients flow to both boxes)."""
    handle = layer.register_forward_hook(lambda _m, _i, out: apply_pastes(out, pastes))
    try:
        yield
    finally:
        handle.remove()
