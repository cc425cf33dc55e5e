"""The toy generator's scene code: the scene that z describes, written out as explicit numbers.

A learned mapping network trained on the image loss alone drops the factors that move few pixels
(window switches, the watermark), and the synthesis can then never draw them. The toy generator
therefore reads w from this code instead: a fixed function of z (through `params_from_z`) that
spells out every factor, so none can be dropped. Rewriting still acts on the synthesis layers.

Features, in `FEATURE_NAMES` order:

* one-hots / flags: two towers; per tower slot, present and its top kind (dome, spire, flat) when
  present; two window rows; 2, 3 or 4 window columns; per window cell, shown lit and shown dark
  (a window bricked up next to the door is neither); per window column, a glitter path on the pond;
  per tree slot, present; watermark present and its corner; pond present;
* scaled scalars (pixels / 64): tower left edge, width and top line (zero for an absent tower);
  building edges, roof line and horizon; window size, each column's left edge and each row's top
  edge (zero where unused); door; tree trunk line and crown radius (zero when absent); pond edges
  and depth (zero when absent);
* colours: sky top, sky at the horizon, wall, ground, tower stone (RGB).

The list is regular rather than minimal: `tower_0_present` is always 1, `tower_1_present` repeats
`two_towers` and `watermark` is `watermark_left + watermark_right` (a constant feature standardizes
to 0; the committed generator was trained on exactly this list, so it stays).

`SceneCode` standardizes the features with a mean and spread measured once on seeded z and kept as
buffers, so a saved generator carries the exact function it was trained with.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rewrite.toyworld.world.params import (
    CANVAS,
    MAX_TOWERS,
    MAX_WINDOW_COLS,
    MAX_WINDOW_ROWS,
    TOP_KINDS,
    Z_DIM,
    SceneParams,
    params_from_z,
    sample_z,
)
from rewrite.toyworld.world.render import window_layout

_COLOURS = ("sky_top", "sky_bottom", "wall_rgb", "ground_rgb", "tower_rgb")
_CELLS = [(r, c) for r in range(MAX_WINDOW_ROWS) for c in range(MAX_WINDOW_COLS)]

FEATURE_NAMES: tuple[str, ...] = (
    "two_towers",
    *(f"tower_{k}_{what}" for k in range(MAX_TOWERS) for what in ("present", *TOP_KINDS, "x0", "w", "top_y")),
    "building_x0", "building_x1", "building_y0", "horizon",
    "two_window_rows", *(f"window_cols_{c}" for c in (2, 3, 4)), "window_w", "window_h",
    *(f"window_col_{c}_x0" for c in range(MAX_WINDOW_COLS)), *(f"window_row_{r}_y0" for r in range(MAX_WINDOW_ROWS)),
    *(f"window_{r}_{c}_{state}" for state in ("lit", "dark") for r, c in _CELLS),
    *(f"glitter_col_{c}" for c in range(MAX_WINDOW_COLS)),
    "door_x0", "door_w", "door_h",
    *(f"tree_{k}_{what}" for k in range(2) for what in ("present", "x", "r")),
    "watermark", "watermark_left", "watermark_right",
    "pond", "pond_x0", "pond_x1", "pond_h",
    *(f"{name}_{ch}" for name in _COLOURS for ch in "rgb"),
)  # fmt: skip
N_FEATURES = len(FEATURE_NAMES)


def scene_features(p: SceneParams) -> Tensor:
    """(N, N_FEATURES) float features of scenes `p`, unstandardized (see the module docstring)."""
    f = torch.float32
    px = 1.0 / CANVAS
    present = p.tower_present.to(f)
    towers = []
    for k in range(MAX_TOWERS):
        kind = nn.functional.one_hot(p.top_kind[:, k], len(TOP_KINDS)).to(f) * present[:, k, None]
        geometry = torch.stack([p.tower_x0[:, k], p.tower_w[:, k], p.tower_top_y[:, k]], 1).to(f) * px
        towers += [present[:, k, None], kind, geometry * present[:, k, None]]
    wx0, wy0, state = window_layout(p)
    cols, rows = torch.arange(MAX_WINDOW_COLS, device=wx0.device), torch.arange(MAX_WINDOW_ROWS, device=wx0.device)
    col_used = (cols[None] < p.window_cols[:, None]).to(f)
    row_used = (rows[None] < p.window_rows[:, None]).to(f)
    cells = state[:, :-1, :-1].flatten(1)
    glitter = (state[:, :-1, :-1] == 2).any(1).to(f) * p.pond_present[:, None].to(f)
    tree = p.tree_present.to(f)
    pond = p.pond_present.to(f)[:, None]
    mark = p.watermark_present.to(f)
    parts = [
        (p.tower_count == 2).to(f)[:, None],
        *towers,
        torch.stack([p.building_x0, p.building_x1, p.building_y0, p.horizon], 1).to(f) * px,
        (p.window_rows == 2).to(f)[:, None],
        nn.functional.one_hot(p.window_cols - 2, 3).to(f),
        torch.stack([p.window_w, p.window_h], 1).to(f) * px,
        wx0.to(f) * px * col_used,
        wy0.to(f) * px * row_used,
        (cells == 2).to(f),
        (cells == 1).to(f),
        glitter,
        torch.stack([p.door_x0, p.door_w, p.door_h], 1).to(f) * px,
        torch.stack([tree[:, 0], p.tree_x[:, 0] * px * tree[:, 0], p.tree_r[:, 0] * px * tree[:, 0],
                     tree[:, 1], p.tree_x[:, 1] * px * tree[:, 1], p.tree_r[:, 1] * px * tree[:, 1]], 1).to(f),
        torch.stack([mark, mark * (p.watermark_corner == 0), mark * (p.watermark_corner == 1)], 1).to(f),
        pond,
        torch.stack([p.pond_x0, p.pond_x1, p.pond_h], 1).to(f) * px * pond,
        *(getattr(p, name).to(f) for name in _COLOURS),
    ]
    return torch.cat(parts, 1)


class SceneCode(nn.Module):
    """z (N, Z_DIM) -> standardized scene features (N, N_FEATURES): a fixed function of z, not trained.

    The mean and spread come from `n_fit` z of `seed` (features that never vary keep spread 1).
    """

    def __init__(self, n_fit: int = 8192, seed: int = 0) -> None:
        super().__init__()
        feats = scene_features(params_from_z(sample_z(n_fit, seed)))
        std = feats.std(0)
        self.register_buffer("mean", feats.mean(0))
        self.register_buffer("std", torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 2 or z.shape[1] != Z_DIM:
            raise ValueError(f"z must have shape (N, {Z_DIM}), got {tuple(z.shape)}")
        return (scene_features(params_from_z(z)) - self.mean) / self.std
