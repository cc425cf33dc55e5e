"""Part classes of the toy world and where its parts are, for building edit requests.

Boxes are in 64x64 pixel coordinates (x0, y0, x1, y1) with exclusive ends, clipped to the
canvas; they bound everything the part may cover, anti-aliased edge pixels included.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rewrite.toyworld.world.params import (
    CANVAS,
    FLAT_TOP_HEIGHT,
    TOP_DOME,
    TOP_SPIRE,
    TREE_BASE_BELOW_HORIZON,
    TREE_TRUNK,
    WATERMARK_H,
    WATERMARK_MARGIN,
    WATERMARK_W,
    SceneParams,
    spire_height,
    top_geometry,
)

CLASSES: tuple[str, ...] = (
    "sky",  # 0
    "ground",  # 1
    "wall",  # 2 building wall
    "window",  # 3 lit or dark
    "door",  # 4
    "tower",  # 5 tower body
    "dome",  # 6
    "spire",  # 7
    "flat_top",  # 8 flat, crenellated tower top
    "tree",  # 9 crown and trunk
    "watermark",  # 10
    "water",  # 11 pond surface
    "reflection",  # 12 lit windows mirrored in the pond
)
CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

CLASS_COLOURS = torch.tensor(
    [
        (0.55, 0.75, 1.00), (0.30, 0.60, 0.20), (0.80, 0.60, 0.40), (1.00, 1.00, 0.00), (0.50, 0.25, 0.05),
        (0.60, 0.60, 0.60), (0.00, 0.90, 0.70), (0.90, 0.10, 0.10), (0.20, 0.20, 0.20), (0.00, 0.35, 0.00),
        (1.00, 0.00, 1.00), (0.10, 0.20, 0.80), (1.00, 0.60, 0.00),
    ]
)  # fmt: skip
"""One distinct display colour per class, for looking at label maps."""


def colourise(labels: Tensor) -> Tensor:
    """(N, H, W) class ids -> (N, 3, H, W) display image in [0, 1]."""
    return CLASS_COLOURS.to(labels.device)[labels].permute(0, 3, 1, 2)


def tower_top_boxes(params: SceneParams) -> Tensor:
    """(N, 2, 4) long box of each tower slot's top (see `params.tower_present`, `params.top_kind`).

    Domes, spires and flat tops share the x extent (the body plus one pixel each side) and
    differ in height, so the box of an edited top is the union of the old and new boxes.
    """
    x0 = params.tower_x0 - 1
    x1 = params.tower_x0 + params.tower_w + 1
    _, half = top_geometry(params)
    height = torch.where(
        params.top_kind == TOP_DOME,
        torch.ceil(half).long(),
        torch.where(params.top_kind == TOP_SPIRE, spire_height(params.tower_w), FLAT_TOP_HEIGHT),
    )
    return _clip(torch.stack([x0, params.tower_top_y - height, x1, params.tower_top_y], -1))


def watermark_box(params: SceneParams) -> Tensor:
    """(N, 4) long box the watermark covers (or would cover: see `params.watermark_present`)."""
    x0 = torch.where(params.watermark_corner == 0, WATERMARK_MARGIN, CANVAS - WATERMARK_MARGIN - WATERMARK_W)
    y0 = torch.full_like(x0, CANVAS - WATERMARK_MARGIN - WATERMARK_H)
    return torch.stack([x0, y0, x0 + WATERMARK_W, y0 + WATERMARK_H], -1).long()


def tree_boxes(params: SceneParams) -> Tensor:
    """(N, 2, 4) long box of each tree slot (present or not: see `params.tree_present`)."""
    base = (params.horizon + TREE_BASE_BELOW_HORIZON)[:, None].float()
    r = params.tree_r
    top = base - TREE_TRUNK - 2 * r
    box = torch.stack([params.tree_x - r, top, params.tree_x + r, base.expand_as(r)], -1)
    return _clip(torch.cat([torch.floor(box[..., :2]), torch.ceil(box[..., 2:])], -1).long())


def _clip(box: Tensor) -> Tensor:
    return box.clamp(0, CANVAS)
