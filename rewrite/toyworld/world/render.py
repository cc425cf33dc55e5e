"""Vectorised renderer of toy-world scenes: params -> (image, part labels).

Every part is an analytic shape evaluated for the whole batch at once (painter's algorithm
over a material map), so a chunk of scenes costs a few dozen tensor ops and there is no
Python loop over scenes or pixels.  The image is anti-aliased by supersampling and a box
filter; labels are the part under each pixel centre.

Two kinds of layer keep the op count low:
- pixel-aligned layers (ground, building, pond, watermark) are constant inside a pixel, so
  they are rasterised once per pixel and broadcast to the supersamples, exactly;
- round and slanted parts (towers and their tops, trees) are left-right symmetric, so each
  is a per-row half-width profile around a centre line: the 2-D work is one comparison.

Layers, back to front: sky and ground, towers (body, then dome / spire / flat top), facade
(wall, windows, door) and pond (water, window reflections), trees, watermark (a translucent badge,
so the scene shows through it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rewrite.toyworld.world.labels import CLASS_ID, watermark_box
from rewrite.toyworld.world.params import (
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
CHUNK = 128
"""Scenes rendered together: big enough to amortise op overhead, small enough for the cache."""

# Materials: finer than classes where colour differs within a class.  WALL, WINDOW_DARK,
# WINDOW_LIT and WATER, REFLECTION are consecutive: the facade adds a window state to them.
SKY, GROUND, WALL, WINDOW_DARK, WINDOW_LIT, DOOR, TOWER, DOME, SPIRE, FLAT, CROWN, TRUNK, WATER, REFLECTION = range(14)
_N_MATERIALS = 14
_NONE = 255  # "this layer does not cover the sample"
_TOP_MATERIAL = torch.tensor([DOME, SPIRE, FLAT], dtype=torch.uint8)  # indexed by top kind
# A sample's code is material + _N_MATERIALS * (0 bare, 1 under the watermark badge, 2 under a glyph).
_BADGE, _GLYPH = 1, 2
_CLASS_OF_CODE = torch.tensor(
    [CLASS_ID[c] for c in (
        "sky", "ground", "wall", "window", "window", "door", "tower", "dome", "spire", "flat_top",
        "tree", "tree", "water", "reflection",
    )] + [CLASS_ID["watermark"]] * (2 * _N_MATERIALS)
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
_SPIRE_TIP = 0.75
"""Least spire half width: the tip covers a pixel centre whatever the tower's parity, so it is
labelled and every pixel a spire touches lies next to a spire-labelled one."""
_BADGE_ALPHA = 0.6  # the watermark badge brightens what is under it 60 % of the way to white
_GLYPH_ALPHA = 0.85  # its glyphs are 85 % dark grey
_GLYPH_RGB = 0.1
"""A bright badge with three dark bars: its mean stands far from any background, so a generator that
cannot draw the bars yet still gains by drawing the badge (a darkened badge with many white glyphs,
the first design, averaged out to the ground colour and was never learned)."""


def render(params: SceneParams, supersample: int = SUPERSAMPLE, chunk: int = CHUNK) -> tuple[Tensor, Tensor]:
    """Render a batch: image (N, 3, 64, 64) float in [0, 1] and labels (N, 64, 64) long (`CLASSES` ids).

    Runs on the params' device.  The ops are short, so on a small CPU shared with other jobs
    torch.set_num_threads(1) is several times faster than multi-threading (barrier stalls).
    """
    parts = [_render_chunk(params[i : i + chunk], supersample) for i in range(0, params.n, chunk)]
    return torch.cat([im for im, _ in parts]), torch.cat([lab for _, lab in parts])


def _render_chunk(p: SceneParams, s: int) -> tuple[Tensor, Tensor]:
    """Image and labels of a few scenes; they share the pixel-aligned layers."""
    xc, yc = _grid(p, 1)
    facade, cover = _facade(p, xc, yc), _watermark_cover(p, xc, yc)
    labels = _CLASS_OF_CODE.to(xc.device)[_rasterise(p, 1, facade, cover).long()]
    return _colour(p, _rasterise(p, s, facade, cover), s), labels


def _colour(p: SceneParams, code: Tensor, s: int) -> Tensor:
    """(N, 3, 64, 64) box-filtered colour of the s x s supersampled code map."""
    n, h, w = code.shape
    rows = torch.arange(n * h, dtype=torch.int32, device=code.device).view(n, h, 1)
    index = (rows * (3 * _N_MATERIALS) + code).view(-1)
    rgb = _row_palette(p, _grid(p, s)[1]).view(-1, 3).index_select(0, index)
    return F.avg_pool2d(rgb.view(n, h, w, 3).permute(0, 3, 1, 2), s).contiguous()


def _grid(p: SceneParams, s: int) -> tuple[Tensor, Tensor]:
    """x and y sample coordinates, (N, 64 s) each: s evenly spaced samples per pixel."""
    c = (torch.arange(CANVAS * s, device=p.horizon.device, dtype=torch.float32) + 0.5) / s
    return c.expand(p.n, -1), c.expand(p.n, -1)


def _rasterise(p: SceneParams, s: int, facade: Tensor, cover: Tensor) -> Tensor:
    """(N, 64 s, 64 s) uint8 code (material and watermark cover) at s x s samples per pixel.

    `facade` and `cover` are the per-pixel layers from `_facade` and `_watermark_cover`.
    """
    xs, ys = _grid(p, s)
    ground = (ys >= p.horizon[:, None]).byte() * (GROUND - SKY) + SKY
    material = ground[:, :, None].expand(-1, -1, xs.shape[1]).contiguous()
    cx, _ = top_geometry(p)
    for k in range(MAX_TOWERS):
        material = _paint_profile(material, xs, cx[:, k], *_tower_profile(p, ys, k))
    cells = material.view(p.n, CANVAS, s, CANVAS, s)
    facade = facade[:, :, None, :, None]
    material = torch.where(facade != _NONE, facade, cells).view_as(material)
    for k in range(p.tree_present.shape[1]):
        material = _paint_profile(material, xs, p.tree_x[:, k].float(), *_tree_profile(p, ys, k))
    return (material.view(p.n, CANVAS, s, CANVAS, s) + cover[:, :, None, :, None]).view_as(material)


def _span(c: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """(N, L) bool: per-scene coordinates c (N, L) inside [lo, hi) (N,)."""
    return (c >= lo[:, None]) & (c < hi[:, None])


def _paint_profile(
    material: Tensor, xs: Tensor, cx: Tensor, outer: Tensor, inner: Tensor | None, row_material: Tensor
) -> Tensor:
    """Paint a left-right symmetric shape: samples with inner <= |x - cx| < outer of their row.

    `outer`, `inner` and `row_material` are per scene and sample row, (N, H); rows the shape
    misses have outer < 0.
    """
    d = (xs - cx[:, None]).abs()[:, None, :]
    inside = d < outer[:, :, None]
    if inner is not None:
        inside &= d >= inner[:, :, None]
    return torch.where(inside, row_material[:, :, None], material)


def _tower_profile(p: SceneParams, ys: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Tower slot k: its body from the top line down to the horizon (the facade hides the
    feet) and, above the top line, a dome (half disc), a spire (triangle ending in a needle
    tip) or a flat top (slab with a 2 px merlon at each end)."""
    _, half = top_geometry(p)
    hk, w = half[:, k, None], p.tower_w[:, k, None].float()
    kind = p.top_kind[:, k, None]
    up = p.tower_top_y[:, k, None] - ys  # > 0 above the top line
    dome = torch.sqrt((hk**2 - up**2).clamp(min=0))
    t = 1 - up / spire_height(p.tower_w[:, k, None])  # 0 at the apex, 1 at the base
    spire = torch.where(t >= 0, (hk * t).clamp(min=_SPIRE_TIP), -1.0)
    flat = torch.where(up <= FLAT_TOP_HEIGHT, w / 2 + 1, -1.0)
    top = torch.where(kind == TOP_DOME, dome, torch.where(kind == TOP_SPIRE, spire, flat))
    body = torch.where(ys < p.horizon[:, None], w / 2, -1.0)
    outer = torch.where(p.tower_present[:, k, None], torch.where(up > 0, top, body), -1.0)
    merlon_rows = (kind == TOP_FLAT) & (up > FLAT_TOP_HEIGHT // 2)
    inner = torch.where(merlon_rows, w / 2 - 1, -1.0)
    row_material = torch.where(up > 0, _TOP_MATERIAL.to(ys.device)[kind], TOWER)
    return outer, inner, row_material


def _tree_profile(p: SceneParams, ys: Tensor, k: int) -> tuple[Tensor, None, Tensor]:
    """Tree slot k: a round crown on a 2 px trunk, standing just in front of the horizon.

    Where the crown is narrower than the trunk (its very bottom) the trunk shows.
    """
    base = (p.horizon + TREE_BASE_BELOW_HORIZON)[:, None].float()
    r = p.tree_r[:, k, None]
    cy = base - TREE_TRUNK - r
    crown = torch.sqrt((r**2 - (ys - cy) ** 2).clamp(min=0))
    trunk = ((ys >= cy) & (ys < base)).float()
    outer = torch.where(p.tree_present[:, k, None], torch.maximum(crown, trunk), -1.0)
    return outer, None, torch.where(crown >= trunk, CROWN, TRUNK).byte()


def _facade(p: SceneParams, xs: Tensor, ys: Tensor) -> Tensor:
    """(N, H, W) uint8 material of the building and the pond, _NONE elsewhere.

    Pixel-aligned, so evaluated once per pixel.  Each lit window casts its reflection down
    the rippled pond as a vertical glitter path: a pond pixel shows a reflection when a lit
    window (in any row) stands in its column.
    """
    out = torch.full((p.n, ys.shape[1], xs.shape[1]), _NONE, dtype=torch.uint8, device=xs.device)
    building = _span(ys, p.building_y0, p.horizon)[:, :, None] & _span(xs, p.building_x0, p.building_x1)[:, None, :]
    out = torch.where(building, WALL + _window_state(p, xs, ys), out)
    door_rows = _span(ys, p.horizon - p.door_h, p.horizon)
    out.masked_fill_(door_rows[:, :, None] & _span(xs, p.door_x0, p.door_x0 + p.door_w)[:, None, :], DOOR)
    pond_rows = _span(ys, p.horizon, p.horizon + p.pond_h) & p.pond_present[:, None]
    pond = pond_rows[:, :, None] & _span(xs, p.pond_x0, p.pond_x1)[:, None, :]
    wx0, _, state_of_cell = window_layout(p)
    lit_col = (state_of_cell == 2).any(1).gather(1, _cell_index(xs, wx0, p.window_w, MAX_WINDOW_COLS))
    glitter = (lit_col & p.reflect[:, None])[:, None, :]
    return torch.where(pond, WATER + glitter.byte(), out)


def _window_state(p: SceneParams, xs: Tensor, ys: Tensor) -> Tensor:
    """(N, H, W) uint8: 0 no window, 1 dark window, 2 lit window at each sample."""
    wx0, wy0, state_of_cell = window_layout(p)
    col = _cell_index(xs, wx0, p.window_w, MAX_WINDOW_COLS)
    row = _cell_index(ys, wy0, p.window_h, MAX_WINDOW_ROWS)
    return state_of_cell[torch.arange(p.n, device=xs.device)[:, None, None], row[:, :, None], col[:, None, :]]


def _cell_index(c: Tensor, starts: Tensor, size: Tensor, none: int) -> Tensor:
    """(N, L) long: which window column (or row) each coordinate falls in, `none` if none."""
    inside = (c[:, None, :] >= starts[:, :, None]) & (c[:, None, :] < (starts + size[:, None])[:, :, None])
    return torch.where(inside.any(1), inside.byte().argmax(1), none)


def window_layout(p: SceneParams) -> tuple[Tensor, Tensor, Tensor]:
    """Window left edges (N, C), top edges (N, R), and state per cell (N, R + 1, C + 1), whose
    last row and column are "no window".

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
    clash_x = (wx0 < (p.door_x0 + p.door_w + 1)[:, None]) & (wx0 + p.window_w[:, None] > (p.door_x0 - 1)[:, None])
    clash_y = wy0 + p.window_h[:, None] > (p.horizon - p.door_h - 1)[:, None]
    used = (rows[None, :, None] < p.window_rows[:, None, None]) & (cols[None, None, :] < p.window_cols[:, None, None])
    visible = used & ~(clash_y[:, :, None] & clash_x[:, None, :])
    state = torch.zeros(p.n, MAX_WINDOW_ROWS + 1, MAX_WINDOW_COLS + 1, dtype=torch.uint8, device=dev)
    state[:, :-1, :-1] = torch.where(visible, 1 + p.window_lit.byte(), 0)
    return wx0, wy0, state


def _watermark_cover(p: SceneParams, xs: Tensor, ys: Tensor) -> Tensor:
    """(N, H, W) uint8 code offset of the watermark: a badge with three 2 x 4 px glyph bars."""
    x0, y0, x1, y1 = watermark_box(p).unbind(-1)
    badge = (_span(ys, y0, y1) & p.watermark_present[:, None])[:, :, None] & _span(xs, x0, x1)[:, None, :]
    glyph_cols = _span(xs, x0 + 2, x1 - 2) & ((torch.floor(xs) - x0[:, None] - 2) % 5 < 2)
    glyphs = badge & _span(ys, y0 + 2, y1 - 2)[:, :, None] & glyph_cols[:, None, :]
    return (badge.byte() * _BADGE + glyphs.byte() * (_GLYPH - _BADGE)) * _N_MATERIALS


def _row_palette(p: SceneParams, ys: Tensor) -> Tensor:
    """(N, H, codes, 3) colour of each code in each sample row (sky and ground shade with y)."""
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
    badge = rows * (1 - _BADGE_ALPHA) + _BADGE_ALPHA
    return torch.cat([rows, badge, badge * (1 - _GLYPH_ALPHA) + _GLYPH_ALPHA * _GLYPH_RGB], 2)
