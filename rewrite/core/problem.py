"""From an edit request to the tensors every strategy works on (one problem, shared by all)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from rewrite.core.erase import erase_layer_out, erase_value, generate_with_value, top_units
from rewrite.core.keys import directions
from rewrite.core.request import EditRequest, Region, resample
from rewrite.core.site import Captured, EditSite, as_map
from rewrite.core.stats import key_rows

log = logging.getLogger(__name__)


def shift(t: Tensor, dx: int, dy: int) -> Tensor:
    """Translate the last two axes by (dx, dy) cells, filling with zeros."""
    h, w = t.shape[-2:]
    out = torch.zeros_like(t)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = t[..., ys, xs]
    return out


def paste(src: Tensor, dst: Tensor, copy_mask: Tensor, offset_px: tuple[int, int], size: int) -> tuple[Tensor, Tensor]:
    """Alpha-blend the copied region of `src` into `dst` at the offset, at the maps' own resolution.

    Returns the pasted map (same shape as `dst`) and the alpha weight (H, W) at the paste site.
    """
    s, d = as_map(src), as_map(dst)
    h, w = d.shape[-2:]
    alpha = resample(copy_mask, h, w)
    dx, dy = round(offset_px[0] * w / size), round(offset_px[1] * h / size)
    a, moved = shift(alpha, dx, dy), shift(s, dx, dy)
    out = d * (1 - a) + moved * a
    return out.reshape(dst.shape), a


def on_grid(offset_px: tuple[int, int], size: int, h: int, w: int) -> bool:
    """The offset is a whole number of cells of an (h, w) map of a `size`-px image: features pasted there land
    exactly where the pixels would. Otherwise `paste` rounds to the nearest cell, up to half a cell off."""
    return (offset_px[0] * w) % size == 0 and (offset_px[1] * h) % size == 0


def paste_offset(copy: Region, region: Region, size: int) -> tuple[int, int] | None:
    """The (dx, dy) that lands the copied region on `region` when their bounding boxes have one size; else None
    (features are pasted, never resized)."""
    cx0, cy0, cx1, cy1 = copy.bbox(size)
    x0, y0, x1, y1 = region.bbox(size)
    if (x1 - x0, y1 - y0) != (cx1 - cx0, cy1 - cy0):
        return None
    return x0 - cx0, y0 - cy0


CONTEXT_BATCH = 32  # context scenes whose keys are captured in one forward pass

MIN_CELL_COVER = 0.25
"""A region must cover at least this share of some feature cell of the edited layer (else it edits nothing it marks)."""


def select(mask_img: Tensor, h: int, w: int, what: str = "region") -> Tensor:
    """Cells of an (h, w) grid that a region covers at least half; the best-covered cells if none do.

    Raises ValueError when the region covers less than `MIN_CELL_COVER` of every cell: at this layer
    it selects no feature cell, so the keys it would contribute belong to what lies around it.
    """
    cover = resample(mask_img, h, w)
    chosen = cover >= 0.5
    if chosen.any():
        return chosen
    if float(cover.max()) < MIN_CELL_COVER:
        size = mask_img.shape[-1]
        raise ValueError(f"{what} selects no feature cell of the layer's {h}x{w} key grid: it covers at most "
                         f"{float(cover.max()):.0%} of any {size // w}x{size // h} px cell (needs "
                         f"{MIN_CELL_COVER:.0%}); enlarge it or edit a finer layer")
    return cover >= cover.max()


def masked_l1(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Weighted mean over positions of the channel-mean absolute error (the paper's L1 value loss)."""
    err = (as_map(pred) - as_map(target)).abs().mean(1)  # (N, H, W)
    return (err * weight).sum() / (weight.sum() * err.shape[0])


@dataclass
class EditProblem:
    """Target keys, the pasted value v*, context keys and C for one request at one site."""

    site: EditSite
    request: EditRequest
    size: int
    z_target: Tensor
    z_source: Tensor  # the image the copied region comes from (the target itself for an erase)
    target: Captured  # the target image's keys, unedited layer output and value (+ context)
    layer_target: Tensor | None  # v* in layer-output space (closed form); None: no exact one (some erases)
    layer_weight: Tensor  # (Hl, Wl) alpha of the paste at the layer output
    target_value: Tensor  # v* in value space (native shape of the value module's output)
    value_weight: Tensor  # (Hv, Wv)
    target_image: Tensor  # (1, 3, S, S) the pasted RGB image (for full fine-tuning)
    image_weight: Tensor  # (S, S)
    paste_keys: Tensor  # (n, in) keys at the paste site
    context_keys: Tensor  # (m, in) keys in the context regions (paste region included by default)
    covariance: Tensor  # C (in, in)
    erase_units: Tensor | None = None  # erase requests: the value channels switched off (rewrite.core.erase)

    @property
    def target_layer_out(self) -> Tensor:
        """v* in layer-output space, for the closed form of the layer's linear part."""
        if self.layer_target is None:
            raise ValueError(
                f"the closed form is not defined for this erase at {self.site.layer_name!r} (value at "
                f"{self.site.value_at!r}): no layer output maps exactly to the erased value there (a modulated "
                "conv's demodulation depends on the edited weight; other tails must be per-channel BatchNorm + "
                "activation); use rank_one, which fits the value itself")
        return self.layer_target

    @property
    def keys(self) -> Tensor:
        """(1, in, Hk, Wk) keys of the target image."""
        return self.target.keys

    @property
    def layer_out0(self) -> Tensor:
        """Unedited layer output (linear part) at the target, native shape."""
        return self.target.layer_out

    def directions(self, rank: int, method: str, use_context: bool = True) -> Tensor:
        return directions(self.context_keys if use_context else self.paste_keys, self.covariance, rank, method)

    def value_loss(self, value: Tensor) -> Tensor:
        return masked_l1(value, self.target_value, self.value_weight)


Goal = tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor, Tensor]  # layer v*, alpha, value v*, alpha, image, alpha


def paste_goal(site: EditSite, request: EditRequest, tgt: Captured, z_src: Tensor, z_tgt: Tensor) -> Goal:
    """The copied region of the source pasted into the target, in layer-output, value and image space."""
    adapter, size = site.adapter, site.adapter.resolution
    offset, copy_mask = request.paste_offset(size), request.source.mask(size)
    src = site.capture(z_src)
    h, w = as_map(tgt.value).shape[-2:]
    if not on_grid(offset, size, h, w):
        log.warning("the copy lands %s px from where it was taken, not a whole number of %s's %g-px cells: its "
                    "features land up to half a cell off the pixel paste, and thin parts suffer (choose copy and "
                    "paste regions on the cell grid)", offset, site.value_at or site.layer_name, size / w)
    layer_out, layer_w = paste(src.layer_out, tgt.layer_out, copy_mask, offset, size)
    value, value_w = paste(src.value, tgt.value, copy_mask, offset, size)
    image, image_w = paste(adapter.generate(z_src), adapter.generate(z_tgt), copy_mask, offset, size)
    return layer_out, layer_w, value, value_w, image, image_w


def marked_values(site: EditSite, request: EditRequest, tgt: Captured,
                  regions: tuple[Region, ...] | None = None) -> tuple[Tensor, Tensor]:
    """(N, C, H, W) values and (N, H, W) coverage at the value's resolution of every seed with a marked
    region (the paste region and the context regions, or `regions`; regions on one seed merged), for
    `top_units`."""
    adapter, size = site.adapter, site.adapter.resolution
    masks: dict[int, Tensor] = {}
    for r in regions if regions is not None else (request.paste, *request.context):
        m = r.mask(size)
        masks[r.seed] = torch.maximum(masks[r.seed], m) if r.seed in masks else m
    values = [tgt.value if s == request.paste.seed else site.capture(adapter.sample_z([s])).value for s in masks]
    hv, wv = as_map(tgt.value).shape[-2:]
    return torch.cat([as_map(v) for v in values]), torch.stack([resample(m, hv, wv) for m in masks.values()])


def erase_goal(site: EditSite, request: EditRequest, tgt: Captured, z_tgt: Tensor, units: Tensor) -> Goal:
    """The target with `units` switched off inside the paste region, in layer-output, value and image space."""
    size = site.adapter.resolution
    mask = request.paste.mask(size)
    value_w = resample(mask, *as_map(tgt.value).shape[-2:])
    layer_w = resample(mask, *as_map(tgt.layer_out).shape[-2:])
    value = erase_value(tgt.value, units, value_w)
    image = generate_with_value(site, z_tgt, value)
    return erase_layer_out(site, tgt.layer_out, units, layer_w), layer_w, value, value_w, image, mask


@torch.no_grad()
def build_problem(site: EditSite, request: EditRequest, covariance: Tensor) -> EditProblem:
    adapter = site.adapter
    size = adapter.resolution
    request.validate(size)
    z_tgt = adapter.sample_z([request.paste.seed])
    tgt = site.capture(z_tgt)
    units = None
    if request.is_erase:
        z_src = z_tgt
        contrast = marked_values(site, request, tgt, request.contrast) if request.contrast else None
        units = top_units(*marked_values(site, request, tgt), request.units, contrast)
        goal = erase_goal(site, request, tgt, z_tgt, units)
    else:
        z_src = adapter.sample_z([request.source.seed])
        goal = paste_goal(site, request, tgt, z_src, z_tgt)

    hk, wk = tgt.keys.shape[-2:]
    paste_sel = select(request.paste.mask(size), hk, wk, "the paste region")
    paste_keys = key_rows(tgt.keys)[paste_sel.flatten()]
    ctx = []
    keys_of = {request.paste.seed: tgt.keys}  # one batched pass (stopped at the layer) per 32 context scenes
    others = list(dict.fromkeys(r.seed for r in request.context_regions if r.seed not in keys_of))
    for i in range(0, len(others), CONTEXT_BATCH):
        chunk = others[i : i + CONTEXT_BATCH]
        keys_of.update(zip(chunk, site.capture_keys(adapter.sample_z(chunk)).split(1), strict=True))
    for i, r in enumerate(request.context_regions):
        k = keys_of[r.seed]
        ctx.append(key_rows(k)[select(r.mask(size), hk, wk, f"context region {i} (seed {r.seed})").flatten()])
    context_keys = torch.cat(ctx) if ctx else paste_keys
    for i, r in enumerate(request.heldout):  # checked now, not when the finished edit is scored
        select(r.mask(size), hk, wk, f"held-out region {i} (seed {r.seed})")
    if covariance.shape != (site.key_dim, site.key_dim):
        raise ValueError(f"covariance is {tuple(covariance.shape)}, the layer has {site.key_dim} key channels")
    return EditProblem(site, request, size, z_tgt, z_src, tgt, *goal, paste_keys, context_keys, covariance, units)
