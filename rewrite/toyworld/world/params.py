"""Scene parameters of the toy world and the fixed map from latent codes z to them.

The toy world stands in for a pretrained generator whose ground truth is known: a latent
z ~ N(0, I) of size `Z_DIM` decides every part of a 64x64 scene through `params_from_z`, a
fixed, deterministic function.  Because the scene is explicit, the ideal result of a rule
change (see `rules.py`) is an exact re-render of the same scene with one parameter changed.

Mapping (`params_from_z`): z is first divided by its root mean square, z_hat = z / RMS(z),
because a StyleGAN2 mapping network starts with exactly that normalisation (PixelNorm) and so
can never see the norm of z; the scene therefore depends on z's direction only. Each named
coordinate of z_hat (see `Z_FIELDS`, in that order) goes through the standard normal CDF,
u = Phi(z_hat_i), so u ~ U(0, 1) (nearly: z_hat_i is close to, not exactly, N(0, 1)), and u
is then ranged:
`pick(u, lo, hi) = lo + floor(u * (hi - lo + 1))` for integers, `lerp(u, a, b)` for reals.

=====================  ===================================================================
z field                scene parameter
=====================  ===================================================================
tower_count            2 towers if u < 0.5 else 1
top_kind_0/1           top kind of tower k: floor(3u) -> 0 dome, 1 spire, 2 flat (1/3 each)
tower_pos_0/1          tower centre as a fraction of the building width: one tower
                       lerp(u, 0.4, 0.6); two towers lerp(u, 0.10, 0.28) / lerp(u, 0.72, 0.90)
tower_width_0/1        body width pick(u, 5, 8) px
tower_top_0/1          y where the body ends and the top begins:
                       pick(u, spire_height + SKY_CLEARANCE, building_y0 - 4)
building_x             building centre x = lerp(u, 26, 38)
building_width         pick(u, 26, 38) px
building_top           roof line y = pick(u, 23, 27)
building_height        pick(u, 13, 19) px; the building stands on the horizon (ground line)
window_rows            pick(u, 1, 2), capped by what fits in the facade
window_cols            pick(u, 2, 4), capped by what fits in the facade
window_lit_r_c         window (r, c) is lit iff u < 0.5 (one coordinate per window, so a
                       generator can learn each switch as one threshold of one input)
window_w / window_h    pick(u, 4, 5) / pick(u, 4, 5) px
door_x                 door centre at lerp(u, 0.2, 0.8) of the building width
door_w / door_h        pick(u, 4, 5) / pick(u, 6, 8) px
tree_0/1               tree left / right of the building present iff u < 0.35
tree_pos_0/1           left tree x = round(building_x0 + lerp(u, -4, 1)); right tree x =
                       round(building_x1 + lerp(u, -1, 4)) (set even when absent, so an
                       added tree has a deterministic place)
tree_size_0/1          crown radius lerp(u, 3.5, 5.5)
watermark              watermark present iff u < 0.25
watermark_corner       0 bottom-left if u < 0.5 else 1 bottom-right (a 16x8 badge)
pond                   pond present iff u < 0.5
pond_depth             pond height pick(u, 7, POND_BOTTOM - horizon)
sky_time               0 midday blue ... 1 dusk orange (sky top and bottom colours)
sky_brightness         sky colours scaled by lerp(u, 0.85, 1.05)
wall_colour            along beige -> brick -> grey
ground_colour          along grass -> dry grass
tower_colour           along warm stone -> cool stone
=====================  ===================================================================

`reflect` (each lit window casts a glitter path down the pond) is always True: it is the
world's physical law, and only the `no_reflections` rule turns it off.

Layout invariants, so that each rule touches nothing but its own parts: the two tower tops
never overlap, trees and the pond stay above the watermark's bottom corners (`POND_BOTTOM`),
and tree trunks never stand in the pond.

World v2 (this layout) made the small parts big enough for a 64x64 generator to draw: windows
of at least 4x4 px in one or two rows, a 16x8 watermark badge, and ponds at least 7 px deep
where each lit window's reflection runs down the water as a vertical glitter path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

CANVAS = 64
MAX_TOWERS = 2
MAX_WINDOW_ROWS = 2
MAX_WINDOW_COLS = 4
TOP_DOME, TOP_SPIRE, TOP_FLAT = 0, 1, 2
TOP_KINDS = ("dome", "spire", "flat")

WATERMARK_W, WATERMARK_H, WATERMARK_MARGIN = 16, 8, 2
SKY_CLEARANCE = 3
"""Spire apexes stay at y >= SKY_CLEARANCE, inside the canvas."""
POND_BOTTOM = CANVAS - WATERMARK_MARGIN - WATERMARK_H - 1
"""Ponds and tree bases end at y <= POND_BOTTOM, one pixel clear of a bottom watermark."""
TREE_BASE_BELOW_HORIZON = 3
TREE_TRUNK = 3
FLAT_TOP_HEIGHT = 4
"""A flat top is a 2 px slab, one pixel wider than the body each side, under 2 px merlons."""

Z_FIELDS: tuple[str, ...] = (
    "tower_count",
    "top_kind_0", "top_kind_1",
    "tower_pos_0", "tower_pos_1",
    "tower_width_0", "tower_width_1",
    "tower_top_0", "tower_top_1",
    "building_x", "building_width", "building_top", "building_height",
    "window_rows", "window_cols", "window_w", "window_h",
    "door_x", "door_w", "door_h",
    "tree_0", "tree_1", "tree_pos_0", "tree_pos_1", "tree_size_0", "tree_size_1",
    "watermark", "watermark_corner",
    "pond", "pond_depth",
    "sky_time", "sky_brightness", "wall_colour", "ground_colour", "tower_colour",
    *(f"window_lit_{r}_{c}" for r in range(MAX_WINDOW_ROWS) for c in range(MAX_WINDOW_COLS)),
)  # fmt: skip
Z_DIM = len(Z_FIELDS)
_Z = {name: i for i, name in enumerate(Z_FIELDS)}
_Uniform = Callable[[str], Tensor]  # z field name -> its uniform u = Phi(z_i), (N,)

_SKY_DAY = ((0.30, 0.55, 0.92), (0.72, 0.85, 0.97))  # (top, horizon)
_SKY_DUSK = ((0.22, 0.22, 0.48), (0.98, 0.62, 0.38))
_WALLS = ((0.84, 0.74, 0.56), (0.66, 0.34, 0.26), (0.62, 0.62, 0.65))
_GROUNDS = ((0.33, 0.55, 0.24), (0.60, 0.56, 0.32))
_TOWERS = ((0.90, 0.87, 0.78), (0.78, 0.80, 0.86))


@dataclass(frozen=True)
class SceneParams:
    """A batch of N scenes; every field is a tensor whose first axis is the scene.

    Coordinates are in 64x64 pixel units, x to the right, y down; boxes are [start, end).
    Rectangles (building, windows, door, tower bodies, pond) sit on integer pixels so they
    stay crisp; only round and slanted outlines are anti-aliased.
    """

    tower_count: Tensor  # (N,) long, 1 or 2
    tower_x0: Tensor  # (N, 2) long, left edge of each tower body
    tower_w: Tensor  # (N, 2) long, body width
    tower_top_y: Tensor  # (N, 2) long, where the body ends and the top begins
    top_kind: Tensor  # (N, 2) long, TOP_DOME / TOP_SPIRE / TOP_FLAT
    horizon: Tensor  # (N,) long, ground line = building base = pond top = mirror line
    building_x0: Tensor  # (N,) long
    building_x1: Tensor  # (N,) long
    building_y0: Tensor  # (N,) long, roof line
    window_rows: Tensor  # (N,) long, 1..MAX_WINDOW_ROWS
    window_cols: Tensor  # (N,) long, 1..MAX_WINDOW_COLS
    window_w: Tensor  # (N,) long
    window_h: Tensor  # (N,) long
    window_lit: Tensor  # (N, MAX_WINDOW_ROWS, MAX_WINDOW_COLS) bool
    door_x0: Tensor  # (N,) long
    door_w: Tensor  # (N,) long
    door_h: Tensor  # (N,) long
    tree_present: Tensor  # (N, 2) bool, slot 0 left of the building, slot 1 right
    tree_x: Tensor  # (N, 2) long, trunk centre line (whole pixels, so the 2 px trunk is crisp)
    tree_r: Tensor  # (N, 2) float, crown radius
    watermark_present: Tensor  # (N,) bool
    watermark_corner: Tensor  # (N,) long, 0 bottom-left, 1 bottom-right
    pond_present: Tensor  # (N,) bool
    pond_x0: Tensor  # (N,) long
    pond_x1: Tensor  # (N,) long
    pond_h: Tensor  # (N,) long, the pond spans rows [horizon, horizon + pond_h)
    reflect: Tensor  # (N,) bool, lit windows cast glitter paths on the water
    sky_top: Tensor  # (N, 3) float RGB at the top of the image
    sky_bottom: Tensor  # (N, 3) float RGB at the horizon
    wall_rgb: Tensor  # (N, 3) float
    ground_rgb: Tensor  # (N, 3) float
    tower_rgb: Tensor  # (N, 3) float

    @property
    def n(self) -> int:
        """Number of scenes in the batch."""
        return self.horizon.shape[0]

    @property
    def tower_present(self) -> Tensor:
        """(N, 2) bool: which of the two tower slots hold a tower."""
        slots = torch.arange(MAX_TOWERS, device=self.tower_count.device)
        return slots[None, :] < self.tower_count[:, None]

    def __getitem__(self, index: slice | Tensor) -> SceneParams:
        """The sub-batch of scenes picked by `index` (a slice, index or mask tensor)."""
        return SceneParams(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


def sample_z(n: int, seed: int = 0) -> Tensor:
    """(n, Z_DIM) standard normal latents, reproducible from `seed` on any machine."""
    return torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(seed))


def spire_height(tower_w: Tensor) -> Tensor:
    """Spire height in pixels for a body width: tall enough to read as a spire at 64x64."""
    return (3 * tower_w) // 2 + 2


def top_geometry(params: SceneParams) -> tuple[Tensor, Tensor]:
    """(centre x, half width) of each tower top, (N, 2) float each.

    Domes and spires overhang the body by half a pixel so they read as caps; their shared
    half width makes a dome and the spire that replaces it sit on the same footprint.
    """
    w = params.tower_w.float()
    return params.tower_x0 + w / 2, w / 2 + 0.5


def z_hat(z: Tensor) -> Tensor:
    """z / RMS(z): what both the scene and a StyleGAN2 mapping network (PixelNorm) see of z."""
    return z * torch.rsqrt(z.pow(2).mean(1, keepdim=True).clamp_min(1e-12))


def params_from_z(z: Tensor) -> SceneParams:
    """The scene that latent z (N, Z_DIM) describes; the mapping is the module docstring's table."""
    if z.ndim != 2 or z.shape[1] != Z_DIM:
        raise ValueError(f"z must have shape (N, {Z_DIM}), got {tuple(z.shape)}")
    u = (0.5 * (1 + torch.erf(z_hat(z.double()) / math.sqrt(2)))).clamp(0.0, 1.0 - 1e-12)  # scale-free

    def at(name: str) -> Tensor:
        return u[:, _Z[name]]

    building_w = _pick(at("building_width"), 26, 38)
    building_x0 = torch.floor(_lerp(at("building_x"), 26, 38) - building_w / 2).long()
    building_y0 = _pick(at("building_top"), 23, 27)
    horizon = building_y0 + _pick(at("building_height"), 13, 19)
    towers = _towers(at, building_x0, building_w, building_y0)
    windows = _windows(at, building_x0, building_w, building_y0, horizon)
    trees = _trees(at, building_x0, building_x0 + building_w)
    sky_top, sky_bottom = _sky(at("sky_time"), at("sky_brightness"))
    return SceneParams(
        **towers,
        horizon=horizon,
        building_x0=building_x0,
        building_x1=building_x0 + building_w,
        building_y0=building_y0,
        **windows,
        **trees,
        watermark_present=at("watermark") < 0.25,
        watermark_corner=_pick(at("watermark_corner"), 0, 1),
        pond_present=at("pond") < 0.5,
        pond_x0=building_x0 + 3,
        pond_x1=building_x0 + building_w - 3,
        pond_h=_pick(at("pond_depth"), 7, POND_BOTTOM - horizon),
        reflect=torch.ones_like(horizon, dtype=torch.bool),
        sky_top=sky_top,
        sky_bottom=sky_bottom,
        wall_rgb=_palette(at("wall_colour"), _WALLS),
        ground_rgb=_palette(at("ground_colour"), _GROUNDS),
        tower_rgb=_palette(at("tower_colour"), _TOWERS),
    )


def _pick(u: Tensor, lo: Tensor | int, hi: Tensor | int) -> Tensor:
    """Integer in [lo, hi], uniform when u is."""
    span = torch.as_tensor(hi) - torch.as_tensor(lo) + 1
    return (torch.as_tensor(lo) + torch.minimum(torch.floor(u * span), span - 1)).long()


def _lerp(u: Tensor, a: float | Tensor, b: float | Tensor) -> Tensor:
    return a + (b - a) * u


def _towers(at: _Uniform, building_x0: Tensor, building_w: Tensor, building_y0: Tensor) -> dict[str, Tensor]:
    """Tower slots; slot 1 is filled only in two-tower scenes but always parameterised.

    Two towers sit near the building's ends (centres at least 0.44 x 26 px apart), so their
    tops (half width <= 5 px, for a flat top) never touch.
    """
    count = 1 + (at("tower_count") < 0.5).long()
    two = count == 2
    pos = torch.stack(
        [
            torch.where(two, _lerp(at("tower_pos_0"), 0.10, 0.28), _lerp(at("tower_pos_0"), 0.4, 0.6)),
            _lerp(at("tower_pos_1"), 0.72, 0.90),
        ],
        1,
    )
    w = torch.stack([_pick(at(f"tower_width_{k}"), 5, 8) for k in range(MAX_TOWERS)], 1)
    centre = building_x0[:, None] + pos * building_w[:, None]
    lowest = building_y0 - 4  # at least 4 px of body show above the roof
    highest = spire_height(w) + SKY_CLEARANCE
    top_y = torch.stack([_pick(at(f"tower_top_{k}"), highest[:, k], lowest) for k in range(MAX_TOWERS)], 1)
    return {
        "tower_count": count,
        "tower_x0": torch.floor(centre - w / 2 + 0.5).long(),
        "tower_w": w,
        "tower_top_y": top_y,
        "top_kind": torch.stack([_pick(at(f"top_kind_{k}"), 0, 2) for k in range(MAX_TOWERS)], 1),
    }


def _windows(
    at: _Uniform, building_x0: Tensor, building_w: Tensor, building_y0: Tensor, horizon: Tensor
) -> dict[str, Tensor]:
    """Window grid and door; the grid is capped so every window keeps a 2 px wall margin."""
    ww, wh = _pick(at("window_w"), 4, 5), _pick(at("window_h"), 4, 5)
    rows = torch.minimum(_pick(at("window_rows"), 1, 2), (horizon - building_y0 - 4) // (wh + 2)).clamp(min=1)
    cols = torch.minimum(_pick(at("window_cols"), 2, 4), (building_w - 4) // (ww + 2)).clamp(min=1)
    lit = torch.stack([at(f"window_lit_{r}_{c}") < 0.5
                       for r in range(MAX_WINDOW_ROWS) for c in range(MAX_WINDOW_COLS)], 1)
    door_w = _pick(at("door_w"), 4, 5)
    door_centre = building_x0 + _lerp(at("door_x"), 0.2, 0.8) * building_w
    return {
        "window_rows": rows,
        "window_cols": cols,
        "window_w": ww,
        "window_h": wh,
        "window_lit": lit.view(-1, MAX_WINDOW_ROWS, MAX_WINDOW_COLS),
        "door_x0": torch.floor(door_centre - door_w / 2 + 0.5).long(),
        "door_w": door_w,
        "door_h": _pick(at("door_h"), 6, 8),
    }


def _trees(at: _Uniform, building_x0: Tensor, building_x1: Tensor) -> dict[str, Tensor]:
    """Tree slots flanking the building; trunks stay outside the pond's columns."""
    x = torch.stack([building_x0 + _lerp(at("tree_pos_0"), -4, 1), building_x1 + _lerp(at("tree_pos_1"), -1, 4)], 1)
    return {
        "tree_present": torch.stack([at("tree_0") < 0.35, at("tree_1") < 0.35], 1),
        "tree_x": torch.floor(x + 0.5).long(),
        "tree_r": torch.stack([_lerp(at(f"tree_size_{k}"), 3.5, 5.5) for k in range(2)], 1).float(),
    }


def _sky(time: Tensor, brightness: Tensor) -> tuple[Tensor, Tensor]:
    """Sky top and horizon colours between midday and dusk."""
    scale = _lerp(brightness, 0.85, 1.05)[:, None]
    day, dusk = (torch.tensor(c, dtype=torch.float64, device=time.device) for c in (_SKY_DAY, _SKY_DUSK))
    colours = [(_lerp(time[:, None], day[i], dusk[i]) * scale).clamp(0, 1).float() for i in range(2)]
    return colours[0], colours[1]


def _palette(u: Tensor, anchors: tuple[tuple[float, float, float], ...]) -> Tensor:
    """(N, 3) colour along the polyline through `anchors`, u = 0 first, u = 1 last."""
    table = torch.tensor(anchors, dtype=torch.float64, device=u.device)
    s = u * (len(anchors) - 1)
    i = torch.floor(s).long().clamp(max=len(anchors) - 2)
    return _lerp((s - i)[:, None], table[i], table[i + 1]).float()
