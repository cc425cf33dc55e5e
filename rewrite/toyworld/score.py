"""Score an edit of the toy generator against the exactly known ideal edit.

For held-out scenes where the rule applies, the ideal image is `render(ideal_edit(params, rule))`
and its footprint is where it differs from the unedited render. Efficacy = how much of the gap
between the unedited generator's output and the ideal image the edit closed inside the footprint;
damage = change outside it, and change on held-out scenes the rule leaves alone. The segmenter,
if given, adds the paper-style figure: the share of source-class pixels now read as the target class,
and `toy_source_recall_before`: the share of the true source-class pixels it finds in the unedited
generator's images (near 0 means the generator does not draw what the rule removes or replaces).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rewrite.generators.base import GeneratorAdapter, seed_latents
from rewrite.toyworld.labels import CLASS_ID
from rewrite.toyworld.params import Z_DIM, params_from_z
from rewrite.toyworld.render import render
from rewrite.toyworld.rules import ideal_edit
from rewrite.toyworld.segmenter import ToySegmenter

# (class whose pixels should change, class they should become) for the segmenter figure
SEG_FIGURE = {
    "dome_to_spire": ("dome", "spire"),
    "remove_watermark": ("watermark", None),  # None: anything but the source class
    "add_tree": (None, "tree"),  # None: the footprint pixels
    "no_reflections": ("reflection", "water"),
}


def _images01(adapter: GeneratorAdapter, z: Tensor) -> Tensor:
    return (adapter.generate(z).clamp(-1, 1) + 1) / 2


class ToyRuleScore:
    """Snapshot at construction (unedited model); `metrics()` after the edit is applied."""

    def __init__(self, adapter: GeneratorAdapter, rule: str, seeds: list[int], untouched_seeds: list[int],
                 segmenter: ToySegmenter | None = None) -> None:
        self.adapter, self.rule, self.segmenter = adapter, rule, segmenter
        self.z = adapter.sample_z(seeds)
        params = params_from_z(self.z.cpu())
        original, self.true_labels = render(params)
        self.ideal, self.ideal_labels = render(ideal_edit(params, rule))
        self.footprint = ((self.ideal - original).abs().amax(1) > 1 / 255).float()  # (N, H, W)
        if not bool(self.footprint.flatten(1).any(1).all()):
            raise ValueError(f"some held-out scenes are not changed by rule {rule!r}")
        self.before = _images01(adapter, self.z)
        self.z_untouched = adapter.sample_z(untouched_seeds) if untouched_seeds else None
        self.before_untouched = _images01(adapter, self.z_untouched) if self.z_untouched is not None else None
        self.before_labels = segmenter.labels(self.before) if segmenter is not None else None

    def _masked_l1(self, a: Tensor, b: Tensor, mask: Tensor) -> float:
        err = (a - b).abs().mean(1)
        return float((err * mask).sum() / mask.sum().clamp_min(1))

    @torch.no_grad()
    def metrics(self) -> dict[str, float]:
        after = _images01(self.adapter, self.z)
        fp, out = self.footprint, 1 - self.footprint
        gap_before = self._masked_l1(self.before, self.ideal, fp)
        gap_after = self._masked_l1(after, self.ideal, fp)
        m = {
            "toy_ideal_l1_in_footprint_before": gap_before,
            "toy_ideal_l1_in_footprint": gap_after,
            "toy_efficacy": 1 - gap_after / max(gap_before, 1e-12),
            "toy_damage_l1_outside_footprint": self._masked_l1(after, self.before, out),
        }
        if self.z_untouched is not None:
            m["toy_damage_l1_untouched_scenes"] = float((_images01(self.adapter, self.z_untouched)
                                                         - self.before_untouched).abs().mean())
        if self.segmenter is not None and self.before_labels is not None:
            src, dst = SEG_FIGURE[self.rule]
            labels = self.segmenter.labels(after)
            region = (self.before_labels == CLASS_ID[src]) if src else fp.bool()
            hit = (labels == CLASS_ID[dst]) if dst else (labels != CLASS_ID[src])
            if region.any():
                m["toy_segmenter_changed_fraction"] = float(hit[region].float().mean())
            if src:  # does the unedited generator draw what the rule acts on? (else efficacy means little)
                true_src = self.true_labels == CLASS_ID[src]
                m["toy_source_recall_before"] = float((self.before_labels[true_src] == CLASS_ID[src]).float().mean())
        return m


def ideal_images(z: Tensor, rule: str) -> Tensor:
    """The exactly known edited images of latents `z`, in [-1, 1] like a generator's output."""
    return render(ideal_edit(params_from_z(z.cpu()), rule))[0].to(z.device) * 2 - 1


def untouched_seeds(rule: str, start: int, count: int) -> list[int]:
    """Seeds from `start` whose scenes the rule does not change at all (for damage elsewhere)."""
    seeds, found = start, []
    while len(found) < count and seeds < start + 50 * count:
        batch = list(range(seeds, seeds + 4 * count))
        p = params_from_z(seed_latents(batch, (Z_DIM,)))
        same = (render(p)[0] == render(ideal_edit(p, rule))[0]).flatten(1).all(1)
        found += [s for s, ok in zip(batch, same.tolist(), strict=True) if ok]
        seeds += 4 * count
    return found[:count]
