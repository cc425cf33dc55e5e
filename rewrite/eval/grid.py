"""Before/after picture of an edit: people would rather look than read a table."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid, save_image

from rewrite.core.files import atomic_write
from rewrite.core.request import Region


def _to_uint8(x: Tensor) -> Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _boxed(img: Tensor, region: Region | None, size: int, scale: int, color: str) -> Tensor:
    """(3, S, S) image in [-1, 1] -> uint8, upscaled, with the region's bounding box drawn."""
    up = F.interpolate(img[None], scale_factor=scale, mode="nearest")[0]
    u8 = _to_uint8(up)
    if region is None:
        return u8
    x0, y0, x1, y1 = region.bbox(size)
    box = torch.tensor([[x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1]], dtype=torch.float)
    return draw_bounding_boxes(u8, box, colors=color, width=max(1, scale // 2))


def before_after_grid(rows: list[tuple[Tensor | None, Region | None, Tensor, Tensor, Region | None]],
                      size: int, path: str | Path | None = None, scale: int | None = None,
                      ideal: Tensor | None = None) -> Tensor:
    """One row per image: [reference (or black), before, after, 4×|after − before|, ideal].

    The reference column is left out when no row has a reference; the ideal column (the exactly
    known right answer, toy world only) when `ideal` is None.

    Each row is (reference image or None, its region, before, after, region to outline).
    """
    if ideal is not None and len(ideal) != len(rows):
        raise ValueError(f"{len(ideal)} ideal images for {len(rows)} rows")
    scale = scale or max(1, 128 // size)
    with_ref = any(r[0] is not None for r in rows)
    tiles = []
    for i, (ref, ref_region, before, after, region) in enumerate(rows):
        if with_ref:
            black = torch.zeros(3, size * scale, size * scale, dtype=torch.uint8)
            tiles.append(_boxed(ref, ref_region, size, scale, "red") if ref is not None else black)
        tiles.append(_boxed(before, region, size, scale, "yellow"))
        tiles.append(_boxed(after, region, size, scale, "yellow"))
        diff = ((after - before).abs() * 4).clamp(0, 2) - 1
        tiles.append(_boxed(diff, None, size, scale, "yellow"))
        if ideal is not None:
            tiles.append(_boxed(ideal[i], region, size, scale, "lime"))
    columns = 3 + int(with_ref) + int(ideal is not None)
    grid = make_grid(torch.stack(tiles), nrow=columns, padding=2, pad_value=255)
    if path is not None:
        atomic_write(path, lambda tmp: save_image(grid.float() / 255, str(tmp)))
    return grid
