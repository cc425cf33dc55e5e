"""Vectorised renderer of toy-world scenes: params -> (image, part labels).

Every part is an analytic shape evaluated on a sample grid for the whole batch at once
(painter's algorithm over a material map), so rendering costs a few dozen tensor ops per
chunk of scenes and no Python loop over scenes or pixels.  The image is anti-aliased by
supersampling and a box filter; labels are the part under each pixel centre.

Layers, back to front: sky, ground, towers (body, then dome / spire / flat top), building
(wall, windows, door), pond (water, reflections), trees, watermark (a translucent badge,
so the scene shows through it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rewrite.toyworld.labels import CLASS_ID, watermark_box
from rewrite.toyworld.params import (
    CANVAS,
    FLAT_TOP_HEIGHT,
    MAX_TOWERS,
    MAX_WINDOW_COLS,
    MAX_WINDOW_ROWS,
    TOP_DOME,
    TOP_FLAT,
    TOP_SPIRE,
    TREE_BASE_BELOW_HORIZON,
    TREE_TRUNK,
    SceneParams,
    spire_height,
    top_geometry,
)

SUPERSAMPLE = 2
"""Samples per pixel along each axis for anti-aliasing."""
CHUNK = 512
"""Scenes rendered together; bounds memory to a few hundred MB at the default supersampling."""

# Materials: finer than classes where colour differs within a class.
SKY, GROUND, WALL, WINDOW_DARK, WINDOW_LIT, DOOR, TOWER, DOME, SPIRE, FLAT, CROWN, TRUNK, WATER, REFLECTION = range(14)
_N_MATERIALS = 14
_CLASS_OF_MATERIAL = torch.tensor(
    [CLASS_ID[c] for c in (
        "sky", "ground", "wall", "window", "window", "door", "tower", "dome", "spire", "flat_top",
        "tree", "tree", "water", "reflection",
    )]
)  # fmt: skip
_FIXED_RGB = {
    WINDOW_DARK: (0.16, 0.19, 0.28),
    WINDOW_LIT: (1.00, 0.86, 0.38),
    DOOR: (0.36, 0.22, 0.12),
    DOME: (0.28, 0.64, 0.54),
    SPIRE: (0.62, 0.16, 0.14),
    FLAT: (0.30, 0.29, 0.30),
    CROWN: (0.12, 0.38, 0.16),
    TRUNK: (0.40, 0.26, 0.14),
}
_DEEP_WATER = (0.08, 0.18, 0.36)
_REFLECTION_STRENGTH = 0.7
_PLATE_KEEP = 0.55  # the watermark badge darkens what is under it to 55 %
_STROKE_ALPHA = 0.9  # its glyphs are 90 % white


def render(params: SceneParams, supersample: int = SUPERSAMPLE, chunk: int = CHUNK) -> tuple[Tensor, Tensor]:
    """Render a batch: image (N, 3, 64, 64) float in [0, 1] and labels (N, 64, 64) long (`CLASSES` ids)."""
    parts = [(_image(p, supersample), _labels(p)) for p in (params[i : i + chunk] for i in range(0, params.n, chunk))]
    return torch.cat([im for im, _ in parts]), torch.cat([lab for _, lab in parts])


def _image(p: SceneParams, s: int) -> Tensor:
    """Box-filtered colour of an s x s supersampled render."""
    xs, ys = _grid(p, s)
    material, plate, stroke = _rasterise(p, xs, ys)
    n, h, w = material.shape
    rows = torch.arange(n * h, device=material.device).view(n, h, 1)
    index = (rows * _N_MATERIALS + material.long()).view(-1)
    rgb = _row_palette(p, ys).view(-1, 3).index_select(0, index).view(n, h, w, 3)
    if plate.any():
        badge = torch.where(plate[..., None], rgb * _PLATE_KEEP, rgb)
        rgb = torch.where(stroke[..., None], rgb * (1 - _STROKE_ALPHA) + _STROKE_ALPHA, badge)
    return rgb.view(n, CANVAS, s, CANVAS, s, 3).mean((2, 4)).permute(0, 3, 1, 2).contiguous()


def _labels(p: SceneParams) -> Tensor:
    """Class of the part under each pixel centre."""
    xs, ys = _grid(p, 1)
    material, plate, _ = _rasterise(p, xs, ys)
    labels = _CLASS_OF_MATERIAL.to(material.device)[material.long()]
    return labels.masked_fill_(plate, CLASS_ID["watermark"])


def _grid(p: SceneParams, s: int) -> tuple[Tensor, Tensor]:
    """x and y sample coordinates, (N, 64 s) each: s evenly spaced samples per pixel."""
    c = (torch.arange(CANVAS * s, device=p.horizon.device, dtype=torch.float32) + 0.5) / s
    return c.expand(p.n, -1), c.expand(p.n, -1)


def _rasterise(p: SceneParams, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Material (N, H, W) uint8 at the samples, and the watermark badge and glyph masks."""
    material = torch.full((p.n, ys.shape[1], xs.shape[1]), SKY, dtype=torch.uint8, device=xs.device)
    material.masked_fill_((ys >= p.horizon[:, None])[:, :, None], GROUND)
    _paint_towers(material, p, xs, ys)
    _paint_building(material, p, xs, ys)
    _paint_pond(material, p, xs, ys)
    _paint_trees(material, p, xs, ys)
    plate, stroke = _watermark(p, xs, ys)
    return material, plate, stroke


def _span(c: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """(N, L) bool: per-scene coordinates c (N, L) inside [lo, hi) (N,)."""
    return (c >= lo[:, None]) & (c < hi[:, None])


def _rect(xs: Tensor, ys: Tensor, x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor) -> Tensor:
    """(N, H, W) bool: samples inside the per-scene box [x0, x1) x [y0, y1)."""
    return _span(ys, y0, y1)[:, :, None] & _span(xs, x0, x1)[:, None, :]


def _disc(xs: Tensor, ys: Tensor, cx: Tensor, cy: Tensor, r: Tensor, below: Tensor | None = None) -> Tensor:
    """(N, H, W) bool: samples inside the circle; only rows above `below` if given (a dome)."""
    dy2 = (ys - cy[:, None]) ** 2
    if below is not None:
        dy2 = dy2.masked_fill(ys >= below[:, None], float("inf"))
    return ((xs - cx[:, None]) ** 2)[:, None, :] + dy2[:, :, None] < (r**2)[:, None, None]


def _paint_towers(material: Tensor, p: SceneParams, xs: Tensor, ys: Tensor) -> None:
    """Tower bodies reach down to the horizon (the building hides their feet); tops sit on them."""
    cx, half = top_geometry(p)
    for k in range(MAX_TOWERS):
        on, kind = p.tower_present[:, k, None, None], p.top_kind[:, k, None, None]
        x0, w, top = p.tower_x0[:, k], p.tower_w[:, k], p.tower_top_y[:, k]
        material.masked_fill_(on & _rect(xs, ys, x0, x0 + w, top, p.horizon), TOWER)
        dome = _disc(xs, ys, cx[:, k], top.float(), half[:, k], below=top)
        material.masked_fill_(on & (kind == TOP_DOME) & dome, DOME)
        spire = _spire(xs, ys, cx[:, k], top, half[:, k], spire_height(w))
        material.masked_fill_(on & (kind == TOP_SPIRE) & spire, SPIRE)
        material.masked_fill_(on & (kind == TOP_FLAT) & _flat_top(xs, ys, x0 - 1, x0 + w + 1, top), FLAT)


def _spire(xs: Tensor, ys: Tensor, cx: Tensor, base: Tensor, half: Tensor, height: Tensor) -> Tensor:
    """Triangle from the base up to the apex, never thinner than 1 px so its tip stays visible."""
    t = (ys - (base - height)[:, None]) / height[:, None]
    inside = (t >= 0) & (ys < base[:, None])
    row_half = torch.where(inside, (half[:, None] * t).clamp(min=0.5), -1.0)
    return (xs - cx[:, None]).abs()[:, None, :] < row_half[:, :, None]


def _flat_top(xs: Tensor, ys: Tensor, x0: Tensor, x1: Tensor, base: Tensor) -> Tensor:
    """A slab with a 2 px merlon at each end: a flat top that still reads as a tower top."""
    slab_h = FLAT_TOP_HEIGHT // 2
    slab = _rect(xs, ys, x0, x1, base - slab_h, base)
    ends = _span(xs, x0, x0 + 2) | _span(xs, x1 - 2, x1)
    return slab | (_span(ys, base - FLAT_TOP_HEIGHT, base - slab_h)[:, :, None] & ends[:, None, :])


def _paint_building(material: Tensor, p: SceneParams, xs: Tensor, ys: Tensor) -> None:
    material.masked_fill_(_rect(xs, ys, p.building_x0, p.building_x1, p.building_y0, p.horizon), WALL)
    state = _window_state(p, xs, ys)
    material.masked_fill_(state == 1, WINDOW_DARK)
    material.masked_fill_(state == 2, WINDOW_LIT)
    door = _rect(xs, ys, p.door_x0, p.door_x0 + p.door_w, p.horizon - p.door_h, p.horizon)
    material.masked_fill_(door, DOOR)


def _window_state(p: SceneParams, xs: Tensor, ys: Tensor) -> Tensor:
    """(N, H, W) uint8: 0 no window, 1 dark window, 2 lit window at each sample.

    Takes per-scene y coordinates so the pond can look up the mirror image of its samples.
    """
    wx0, wy0, state_of_cell = _window_layout(p)
    in_col = (xs[:, None, :] >= wx0[:, :, None]) & (xs[:, None, :] < (wx0 + p.window_w[:, None])[:, :, None])
    in_row = (ys[:, None, :] >= wy0[:, :, None]) & (ys[:, None, :] < (wy0 + p.window_h[:, None])[:, :, None])
    col, row = in_col.byte().argmax(1), in_row.byte().argmax(1)
    cell = row[:, :, None] * MAX_WINDOW_COLS + col[:, None, :]
    cell = cell.masked_fill_(~(in_row.any(1)[:, :, None] & in_col.any(1)[:, None, :]), MAX_WINDOW_ROWS * MAX_WINDOW_COLS)
    return state_of_cell.gather(1, cell.view(p.n, -1)).view(cell.shape)


def _window_layout(p: SceneParams) -> tuple[Tensor, Tensor, Tensor]:
    """Window left edges (N, C), top edges (N, R) and state per cell (N, R * C + 1; last = none).

    Windows are centred in an even grid inside a 2 px wall margin; a window that would touch
    the door (with a 1 px gap) is bricked up so the door never cuts a window in half.
    """
    dev = p.horizon.device
    cols, rows = torch.arange(MAX_WINDOW_COLS, device=dev), torch.arange(MAX_WINDOW_ROWS, device=dev)
    gx0, gy0 = p.building_x0 + 2, p.building_y0 + 2
    cell_w = (p.building_x1 - 2 - gx0) / p.window_cols
    cell_h = (p.horizon - 2 - gy0) / p.window_rows
    wx0 = torch.floor(gx0[:, None] + (cols + 0.5) * cell_w[:, None] - p.window_w[:, None] / 2 + 0.5)
    wy0 = torch.floor(gy0[:, None] + (rows + 0.5) * cell_h[:, None] - p.window_h[:, None] / 2 + 0.5)
    door_x0, door_y0 = p.door_x0 - 1, p.horizon - p.door_h - 1
    clash_x = (wx0 < (p.door_x0 + p.door_w + 1)[:, None]) & (wx0 + p.window_w[:, None] > door_x0[:, None])
    clash_y = wy0 + p.window_h[:, None] > door_y0[:, None]
    used = (rows[None, :, None] < p.window_rows[:, None, None]) & (cols[None, None, :] < p.window_cols[:, None, None])
    visible = used & ~(clash_y[:, :, None] & clash_x[:, None, :])
    state = torch.where(visible, 1 + p.window_lit.byte(), 0).view(p.n, -1).byte()
    return wx0, wy0, torch.cat([state, state.new_zeros(p.n, 1)], 1)


def _paint_pond(material: Tensor, p: SceneParams, xs: Tensor, ys: Tensor) -> None:
    """Water in front of the building; where `reflect`, the lit windows mirrored about the horizon."""
    pond = p.pond_present[:, None, None] & _rect(xs, ys, p.pond_x0, p.pond_x1, p.horizon, p.horizon + p.pond_h)
    material.masked_fill_(pond, WATER)
    mirrored = 2 * p.horizon[:, None] - ys
    lit_above = _window_state(p, xs, mirrored) == 2
    material.masked_fill_(pond & p.reflect[:, None, None] & lit_above, REFLECTION)


def _paint_trees(material: Tensor, p: SceneParams, xs: Tensor, ys: Tensor) -> None:
    """Round crowns on 2 px trunks standing just in front of the building's corners."""
    base = (p.horizon + TREE_BASE_BELOW_HORIZON).float()
    for k in range(p.tree_present.shape[1]):
        x, r, on = p.tree_x[:, k], p.tree_r[:, k], p.tree_present[:, k, None, None]
        cy = base - TREE_TRUNK - r
        trunk_x0 = torch.floor(x + 0.5) - 1
        material.masked_fill_(on & _rect(xs, ys, trunk_x0, trunk_x0 + 2, cy, base), TRUNK)
        material.masked_fill_(on & _disc(xs, ys, x, cy, r), CROWN)


def _watermark(p: SceneParams, xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor]:
    """A dark translucent badge with a row of white 2 px glyphs, in the chosen corner."""
    x0, y0, x1, y1 = watermark_box(p).unbind(-1)
    plate = p.watermark_present[:, None, None] & _rect(xs, ys, x0, x1, y0, y1)
    glyph_cols = _span(xs, x0 + 1, x1 - 1) & ((torch.floor(xs) - x0[:, None] - 1) % 3 < 2)
    glyphs = _span(ys, y0 + 1, y1 - 1)[:, :, None] & glyph_cols[:, None, :]
    return plate, plate & glyphs


def _row_palette(p: SceneParams, ys: Tensor) -> Tensor:
    """(N, H, materials, 3) colour of each material in each sample row (sky and ground shade with y)."""
    palette = torch.zeros(p.n, _N_MATERIALS, 3, device=ys.device)
    for material, rgb in _FIXED_RGB.items():
        palette[:, material] = torch.tensor(rgb, device=ys.device)
    water = 0.75 * torch.tensor(_DEEP_WATER, device=ys.device) + 0.25 * p.sky_bottom
    palette[:, WALL], palette[:, TOWER], palette[:, WATER] = p.wall_rgb, p.tower_rgb, water
    palette[:, REFLECTION] = _REFLECTION_STRENGTH * palette[:, WINDOW_LIT] + (1 - _REFLECTION_STRENGTH) * water
    rows = palette[:, None].repeat(1, ys.shape[1], 1, 1)
    height = (ys / p.horizon[:, None]).clamp(0, 1)[..., None]
    rows[:, :, SKY] = p.sky_top[:, None] + (p.sky_bottom - p.sky_top)[:, None] * height
    depth = ((ys - p.horizon[:, None]) / (CANVAS - p.horizon[:, None])).clamp(0, 1)[..., None]
    rows[:, :, GROUND] = p.ground_rgb[:, None] * (1 - 0.25 * depth)
    return rows
