"""Rule-edit scores that damage cannot game: per-pixel agreement counts, never gaps or pooled means.

An L1 gap to a goal shrinks when an image is blurred, and a pooled feature mean moves toward any
average, so both reward wrecked edits. Here every pixel either reaches its goal or does not:

* a pixel of the change footprint *reaches the goal* when its colour is within `tol` of the goal
  image in every channel (and, where a segmenter reads the images, its class is the goal's class);
* a pixel outside the footprint *stays* when it is within `tol` of the unedited image (and keeps
  its class).

`specificity` is the mean share of pixels that stayed (everything else). An image *follows the rule*
to the extent that its footprint reaches the goal *and* the rest of it stays: per image,
reached × stayed, so an edit that washes every image toward an average cannot buy goal pixels with
damage. `efficacy` (the target image) and `generality` (held-out images) are means of that product
(`*_footprint`: the footprint share alone); `edit_score` is the geometric mean of generality and
specificity, as model-editing benchmarks report. Intervals are percentile bootstraps over images.
Images are in [0, 1], (N, 3, H, W); masks and label maps are (N, H, W).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rewrite.core.checks import integer, number

DEFAULT_TOL = 0.1  # per-channel colour tolerance in [0, 1] units
BOOTSTRAP_SAMPLES = 2000


def to01(images: Tensor) -> Tensor:
    """Generator images in [-1, 1] -> [0, 1], the range every score here reads."""
    return (images.clamp(-1, 1) + 1) / 2


def within(a: Tensor, b: Tensor, tol: float) -> Tensor:
    """(N, H, W) bool: every channel of `a` within `tol` of `b`.

    `tol` in (0, 1]: 0 or less counts no pixel, above 1 every pixel, NaN none and inf all (scores that
    look like numbers but measure nothing), so it is refused here, where every score reads it.
    """
    number("tol", tol, 0, 1, low_open=True)
    return (a - b).abs().amax(1) <= tol


def dilate(mask: Tensor, margin: int) -> Tensor:
    """(N, H, W) bool mask grown by `margin` pixels (square neighbourhood); a negative margin is an error,
    not 0."""
    if integer("margin", margin, 0) == 0:
        return mask.bool()
    return F.max_pool2d(mask.float()[:, None], 2 * margin + 1, stride=1, padding=margin)[:, 0] > 0


def change_footprint(before: Tensor, goal: Tensor, tol: float, before_labels: Tensor | None = None,
                     goal_labels: Tensor | None = None) -> Tensor:
    """Pixels the edit must change: the goal's colour is more than `tol` away (or its class differs).

    Pixels that already agree with the goal are left out, so an edit that does nothing scores 0 there.
    """
    fp = ~within(before, goal, tol)
    if before_labels is not None and goal_labels is not None:
        fp |= before_labels != goal_labels
    return fp


def share(hit: Tensor, where: Tensor) -> Tensor:
    """(N,) share of `where` pixels that are `hit`, per image; NaN for an image with no such pixel."""
    where = where.bool()
    n = where.flatten(1).sum(1).float()
    k = (hit.bool() & where).flatten(1).sum(1).float()
    return torch.where(n > 0, k / n.clamp_min(1), torch.full_like(n, float("nan")))


def matching_share(after: Tensor, reference: Tensor, where: Tensor, tol: float = DEFAULT_TOL,
                   after_labels: Tensor | None = None, reference_labels: Tensor | None = None) -> Tensor:
    """(N,) share of `where` pixels whose colour is within `tol` of `reference` (and, with labels, whose
    class matches it). Against the goal over the footprint it is generality, against the unedited image
    over what should stay it is specificity: the two names below say which."""
    hit = within(after, reference, tol)
    if after_labels is not None and reference_labels is not None:
        hit &= after_labels == reference_labels
    return share(hit, where)


goal_reached = matching_share  # (after, goal, footprint, ...): share of the footprint that reached the goal
stayed = matching_share  # (after, before, keep, ...): share of the kept pixels still as they were


@dataclass(frozen=True)
class PartCounts:
    """Per image and part class: the pixels of that class (as read in the unedited image) where specificity
    looks, and how many of them stayed; (N, K) each. A share of pixels is ruled by the large parts (sky,
    ground): an edit that switches off every window keeps most pixels. The mean over parts gives each part
    the weight of the sky."""

    kept: Tensor
    total: Tensor
    names: tuple[str, ...]

    @classmethod
    def count(cls, hit: Tensor, where: Tensor, labels: Tensor, names: Sequence[str]) -> PartCounts:
        """Counts of `where` pixels per class of `labels` (N, H, W), and of those that are `hit`."""
        per_class = F.one_hot(labels.long(), len(names)).bool() & where.bool()[..., None]  # (N, H, W, K)
        kept = (per_class & hit.bool()[..., None]).flatten(1, 2).sum(1)
        return cls(kept, per_class.flatten(1, 2).sum(1), tuple(names))

    @classmethod
    def cat(cls, parts: Sequence[PartCounts]) -> PartCounts:
        return cls(torch.cat([p.kept for p in parts]), torch.cat([p.total for p in parts]), parts[0].names)

    def shares(self, idx: Tensor | None = None) -> Tensor:
        """(K,) pooled share of each class's pixels that stayed, or (B, K) for image resamples `idx` (B, N);
        NaN where a class has no pixel."""
        kept, total = (self.kept, self.total) if idx is None else (self.kept[idx], self.total[idx])
        k, t = kept.sum(-2).double(), total.sum(-2).double()
        return torch.where(t > 0, k / t.clamp_min(1), torch.full_like(t, float("nan")))

    def mean(self, idx: Tensor | None = None) -> Tensor:
        """Mean over the classes present of their shares (one per resample with `idx`)."""
        return self.shares(idx).nanmean(-1)

    def summary(self, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, float | str]:
        """`specificity` (mean over parts, with a bootstrap interval over images), the worst part and its name."""
        shares = self.shares()
        g = torch.Generator().manual_seed(seed)
        boot = self.mean(torch.randint(len(self.kept), (samples, len(self.kept)), generator=g))
        lo, hi = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=boot.dtype))
        worst = int(torch.nan_to_num(shares, nan=2.0).argmin())
        out: dict[str, float | str] = {"specificity": float(self.mean()), "specificity_ci_low": float(lo),
                                       "specificity_ci_high": float(hi),
                                       "specificity_worst_class": float(shares[worst]),
                                       "specificity_worst_class_name": self.names[worst]}
        out.update({f"specificity_class_{n}": float(v) for n, v in zip(self.names, shares.tolist(), strict=True)
                    if v == v})
        return out


def _finite(x: Tensor) -> Tensor:
    return x[~torch.isnan(x)].double()


def bootstrap_ci(values: Tensor, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% interval of the mean of per-image values (resampling images); fixed seed."""
    v = _finite(values)
    if len(v) == 0:
        return float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    means = v[torch.randint(len(v), (samples, len(v)), generator=g)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=means.dtype))
    return float(lo), float(hi)


def mean_with_ci(name: str, values: Tensor) -> dict[str, float]:
    """`name`, `name_ci_low`, `name_ci_high` for per-image values (NaNs, images with nothing to score, skipped)."""
    v = _finite(values)
    lo, hi = bootstrap_ci(v)
    return {name: float(v.mean()) if len(v) else float("nan"), f"{name}_ci_low": lo, f"{name}_ci_high": hi}


def edit_score(generality: Tensor, specificity: Tensor | PartCounts, samples: int = BOOTSTRAP_SAMPLES,
               seed: int = 0) -> dict[str, float]:
    """The geometric mean of mean generality and specificity (per-image values, or per-part counts), with a
    bootstrap interval that resamples the two sets of images independently."""
    g = _finite(generality)
    n_spec = len(specificity.kept) if isinstance(specificity, PartCounts) else len(_finite(specificity))
    if len(g) == 0 or n_spec == 0:
        return {"edit_score": float("nan"), "edit_score_ci_low": float("nan"), "edit_score_ci_high": float("nan")}
    gen = torch.Generator().manual_seed(seed)
    gm = g[torch.randint(len(g), (samples, len(g)), generator=gen)].mean(1)
    idx = torch.randint(n_spec, (samples, n_spec), generator=gen)
    if isinstance(specificity, PartCounts):
        sm, s_mean = specificity.mean(idx), float(specificity.mean())
    else:
        s = _finite(specificity)
        sm, s_mean = s[idx].mean(1), float(s.mean())
    boot = (gm.clamp_min(0) * sm.clamp_min(0)).sqrt()
    lo, hi = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=boot.dtype))
    return {"edit_score": math.sqrt(max(float(g.mean()), 0.0) * max(s_mean, 0.0)),
            "edit_score_ci_low": float(lo), "edit_score_ci_high": float(hi)}


def rule_summary(target: tuple[Tensor, Tensor], heldout: tuple[Tensor, Tensor],
                 specificity: Tensor, parts: PartCounts | None = None) -> dict[str, float]:
    """The four headline numbers (+ intervals, counts) from per-image scores: `target` and `heldout` are
    (reached, stayed) per image, `specificity` every image's stayed share (held-out, target, untouched).
    With `parts` (where the scorer knows part labels) `specificity` is the mean over parts, the pixel share
    is kept as `specificity_pixels`, and the edit_score uses the per-part figure."""
    efficacy, generality = target[0] * target[1], heldout[0] * heldout[1]
    out = mean_with_ci("efficacy", efficacy)
    out.update(mean_with_ci("generality", generality))
    if parts is None:
        out.update(mean_with_ci("specificity", specificity))
    else:
        out.update({k.replace("specificity", "specificity_pixels"): v
                    for k, v in mean_with_ci("specificity", specificity).items()})
        out.update(parts.summary())  # type: ignore[arg-type]
    out.update(edit_score(generality, specificity if parts is None else parts))
    out["efficacy_footprint"] = float(_finite(target[0]).mean()) if len(_finite(target[0])) else float("nan")
    out["generality_footprint"] = float(_finite(heldout[0]).mean()) if len(_finite(heldout[0])) else float("nan")
    out["n_heldout"] = int((~torch.isnan(generality)).sum())
    return out


def goal_image_scores(before: Tensor, after: Tensor, goal: Tensor, tol: float = DEFAULT_TOL,
                      margin: int = 1) -> tuple[Tensor, Tensor]:
    """Per image (reached, stayed) against a goal image (no labels): the share of the pixels the goal
    changes by more than `tol` that the edit brought within `tol` of it, and the share of the pixels the
    goal leaves as they were (8-bit precision, grown by `margin`) that stayed within `tol`."""
    footprint = change_footprint(before, goal, tol)
    keep = ~dilate(~within(before, goal, 1 / 255), margin)
    return goal_reached(after, goal, footprint, tol), stayed(after, before, keep, tol)
