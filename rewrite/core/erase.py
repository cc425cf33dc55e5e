"""Erase edits (the paper's watermark experiment): which value units to switch off, and where.

The goal of an erase is the generator's own value with the units that draw the marked thing
switched off inside the marked region; the rank-one family then inserts that goal as it inserts
a paste, and the GAN Dissection baseline switches the same units off everywhere, for good.

Unit selection (GAN Dissection-style, on the value `site.capture(z).value`): a unit's activity is
its positive part max(v, 0) (a no-op after ReLU), and its score is

    score_u = mean_inside(max(v_u, 0)) / (mean_outside(max(v_u, 0)) + eps)

where the means run over every position of every marked sample (the paste region and the context
regions; regions on the same seed are merged), each position weighted by its coverage `a` of the
marked region (inside) or `1 - a` (outside), and `eps` is 1e-3 × the mean activity of all units, so
a unit silent everywhere scores ~0 rather than 0/0. The `units` highest scores are switched off.
With `contrast` regions in the request (the same place without the thing: eye boxes of faces
without glasses, watermark corners of scenes without one) the reference is the mean activity inside
those instead of outside the marked regions, so units that draw the thing beat units that draw
the place (eyes) — the contrast GAN Dissection gets from its segmentation.

"Off" is 0 (GAN Dissection's ablation). Filling with each unit's mean outside the region instead was
measured on the face erase (`face_erase_glasses`, 20 held-out faces): the images look alike and the
box changes 6-8% less at 8-32 units (the same at 64), so the simpler zero stays; it also has an exact
layer-output preimage through BatchNorm + ReLU (`zero_preimage`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rewrite.core.site import EditSite, as_map

# Tail modules that act on each channel alone and map 0 to 0 (so 0 is a preimage of a zero value).
ZERO_PRESERVING = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Identity)


def _inside(act: Tensor, a: Tensor) -> Tensor:
    return (act * a).sum((0, 2, 3)) / a.sum().clamp_min(1e-12)


def unit_scores(values: Tensor, alphas: Tensor, contrast: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """(C,) inside/outside activity ratio of every unit, see the module docstring.

    `values` (N, C, H, W) (or (N, C)), `alphas` (N, H, W) coverage of the marked region in [0, 1].
    `contrast` (values, coverage) of regions showing the same place without the thing: the reference
    becomes the mean activity inside them instead of outside the marked regions.
    """
    act = as_map(values).double().clamp_min(0)
    a = alphas.double()[:, None]
    inside = _inside(act, a)
    if contrast is None:
        reference = (act * (1 - a)).sum((0, 2, 3)) / (1 - a).sum().clamp_min(1e-12)
    else:
        reference = _inside(as_map(contrast[0]).double().clamp_min(0), contrast[1].double()[:, None])
    return inside / (reference + 1e-3 * act.mean())


def top_units(values: Tensor, alphas: Tensor, k: int, contrast: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Indices (k,) of the units most active inside the marked regions relative to the reference, best first."""
    channels = as_map(values).shape[1]
    if not 1 <= k <= channels:
        raise ValueError(f"cannot switch off {k} units: the value has {channels} channels")
    return torch.topk(unit_scores(values, alphas, contrast), k).indices


def erase_value(value: Tensor, units: Tensor, mask: Tensor) -> Tensor:
    """`value` with the `units` channels set to 0 inside `mask` ((H, W) at the value's resolution),
    alpha-blended by the mask's coverage as a paste is; every other entry is returned unchanged."""
    v = as_map(value).clone()
    v[:, units] = v[:, units] * (1 - mask.to(v.dtype))
    return v.reshape(value.shape)


@torch.no_grad()
def generate_with_value(site: EditSite, z: Tensor, value: Tensor) -> Tensor:
    """The generator's images with `value` in place of the value module's output (a forward hook that
    returns a tensor replaces the module's output); a clone, so later in-place ops leave `value` be."""
    handle = site.value_module.register_forward_hook(lambda _m, _inp, _out: value.clone())
    try:
        return site.adapter.model(z)
    finally:
        handle.remove()


def zero_preimage(site: EditSite, channels: int) -> Tensor | None:
    """(C,) layer output per channel that the tail maps exactly to a zero value, or None where no exact
    per-channel answer exists (modulated convs, whose demodulation depends on the edited weight; tails
    that mix channels or reshape; BatchNorm in training mode or with a zero scale).

    Walks the tail backwards from 0: a zero-preserving activation keeps 0 (ReLU's other preimages, any
    negative input, would do as well), an eval-mode BatchNorm inverts to mean + (0 - β)·σ/γ.
    """
    if type(site) is not EditSite:
        return None
    x = torch.zeros(channels, dtype=torch.float64)
    for m in reversed(site._tail):
        if isinstance(m, ZERO_PRESERVING):
            continue
        if not isinstance(m, nn.modules.batchnorm._BatchNorm) or m.training or m.running_mean is None:
            return None
        gamma = m.weight.double() if m.affine else torch.ones_like(x)
        beta = m.bias.double() if m.affine else torch.zeros_like(x)
        if bool((gamma == 0).any()):
            return None
        x = m.running_mean.double() + (x - beta) * (m.running_var.double() + m.eps).sqrt() / gamma
    return x


def erase_layer_out(site: EditSite, layer_out: Tensor, units: Tensor, mask: Tensor) -> Tensor | None:
    """The layer output whose value is `erase_value(value, units, mask)` (the closed form's target), or
    None where `zero_preimage` has no exact answer. Exact where the mask is 0 or 1; at a partly covered
    cell the blend toward the preimage is made before the tail's nonlinearity."""
    v = as_map(layer_out).clone()
    x0 = zero_preimage(site, v.shape[1])
    if x0 is None:
        return None
    a = mask.to(v.dtype)
    v[:, units] = v[:, units] * (1 - a) + x0[units].to(v.dtype)[:, None, None] * a
    return v.reshape(layer_out.shape)
