"""Score an edit of the toy generator against the exactly known ideal edit, per pixel, through the segmenter.

For every scene the ideal edited image is `render(ideal_edit(params, rule))` with its label map.
The *change footprint* of a scene is where the ideal differs from the original render by more than
the colour tolerance or in class. With `rewrite.eval.rule_metrics`:

* a footprint pixel of a generated image reaches the goal when the segmenter reads the ideal's class
  there and its colour is within `tol` of the ideal render (the paper's "% of dome pixels now spire",
  made strict: a blur or a smear of colour does not pass);
* any other pixel stays when its class (as read by the segmenter) and its colour (within `tol`)
  are as in the unedited generator's image.

Footprint pixels that the unedited generator already draws as the ideal need no edit and are left
out, so an edit that does nothing scores 0. `efficacy` is the target scene's share (times the share
of its other pixels that stayed, see `rewrite.eval.rule_metrics`), `generality` the same over held-out
scenes. `specificity` looks at the held-out and target scenes' pixels outside the footprint (grown by
`margin` pixels, where edges of generated parts legitimately move) and at whole scenes the rule leaves
alone, *per part*: for each class (as the segmenter reads the unedited image) the share of its pixels
that stayed, pooled over the scenes, then the mean over the classes present, so switching off every
window counts as much as repainting the sky (`specificity_pixels`: the share of all pixels;
`specificity_worst_class` and its `_name`: the part kept worst; `specificity_class_<name>` each part).
Pixels the unedited image shows as the rule's source class (dome, watermark, reflection) are the rule's to
change wherever the generator drew them, so they are left out of specificity even outside the true footprint.
Diagnostics: `toy_footprint_fidelity_before` (how well the unedited generator
draws the scenes where the rule acts: a ceiling for generality), the class-only and colour-only
parts, the paper-style `toy_segmenter_changed_fraction`, and `toy_source_recall_before` (the share
of true source-class pixels the segmenter finds in the unedited images: near 0 means the generator
does not draw what the rule acts on, so nothing can be measured).
"""

from __future__ import annotations

import functools
from collections import OrderedDict

import torch
from torch import Tensor

from rewrite.core.files import state_fingerprint
from rewrite.core.request import EditRequest
from rewrite.eval.rule_metrics import (
    DEFAULT_TOL,
    PartCounts,
    change_footprint,
    dilate,
    goal_reached,
    rule_summary,
    share,
    to01,
    within,
)
from rewrite.generators.base import GeneratorAdapter, seed_latents
from rewrite.toyworld.models.segmenter import ToySegmenter, load_toy_segmenter, segmenter_path
from rewrite.toyworld.world.labels import CLASS_ID, CLASSES
from rewrite.toyworld.world.params import Z_DIM, params_from_z
from rewrite.toyworld.world.render import render
from rewrite.toyworld.world.rules import ideal_edit

# (class whose pixels should change, class they should become) for the paper-style segmenter figure
SEG_FIGURE = {
    "dome_to_spire": ("dome", "spire"),
    "remove_watermark": ("watermark", None),  # None: anything but the source class
    "add_tree": (None, "tree"),  # None: the footprint pixels
    "no_reflections": ("reflection", "water"),
}


def _images01(adapter: GeneratorAdapter, z: Tensor) -> Tensor:
    return to01(adapter.generate(z))


class _Scenes:
    """Renders, ideal renders, footprints and the unedited generator's images for a list of latents."""

    def __init__(self, adapter: GeneratorAdapter, z: Tensor, rule: str, tol: float, margin: int,
                 segmenter: ToySegmenter) -> None:
        params = params_from_z(z.cpu())
        self.original, self.true_labels = render(params)
        self.ideal, self.ideal_labels = render(ideal_edit(params, rule))
        touched = ~within(self.original, self.ideal, 1 / 255) | (self.true_labels != self.ideal_labels)
        self.keep = ~dilate(touched, margin)
        self.before = _images01(adapter, z)
        self.before_labels = segmenter.labels(self.before)
        source = SEG_FIGURE[rule][0]
        if source is not None:  # every dome / watermark / reflection the model draws is the rule's to change,
            self.keep &= self.before_labels != CLASS_ID[source]  # even where the true render has none
        self.must_change = change_footprint(self.original, self.ideal, tol, self.true_labels, self.ideal_labels)
        # Pixels the unedited generator already draws as the ideal need no edit: left out, so no edit scores 0.
        self.footprint = self.must_change & change_footprint(self.before, self.ideal, tol, self.before_labels,
                                                             self.ideal_labels)


_SNAPSHOTS: OrderedDict[tuple, _Scenes] = OrderedDict()
SNAPSHOT_MEMO = 32  # scene snapshots kept per process (a multirun's jobs share the unedited model's)


def _snapshot(adapter: GeneratorAdapter, seeds: list[int], rule: str, tol: float, margin: int,
              segmenter: ToySegmenter, memo: bool) -> _Scenes:
    """The scenes of `seeds` with the unedited model's images; with `memo`, kept under the weights' and the
    segmenter's hashes and everything else they depend on (a changed weight is a new key)."""
    if not memo:
        return _Scenes(adapter, adapter.sample_z(seeds), rule, tol, margin, segmenter)
    key = (adapter.fingerprint(), state_fingerprint(segmenter.state_dict()), tuple(seeds), rule, tol, margin)
    if key not in _SNAPSHOTS:
        _SNAPSHOTS[key] = _Scenes(adapter, adapter.sample_z(seeds), rule, tol, margin, segmenter)
        while len(_SNAPSHOTS) > SNAPSHOT_MEMO:
            _SNAPSHOTS.popitem(last=False)
    _SNAPSHOTS.move_to_end(key)
    return _SNAPSHOTS[key]


class ToyRuleScore:
    """Snapshot at construction (unedited model); `metrics()` after the edit is applied.

    `seeds` are held-out scenes the rule changes, `untouched_seeds` scenes it leaves alone,
    `target_seed` the scene the edit was made on (for `efficacy`). With `memo`, the snapshots of the
    held-out and target scenes are shared with earlier scorers of the same weights in this process.
    """

    def __init__(self, adapter: GeneratorAdapter, rule: str, seeds: list[int], untouched_seeds: list[int],
                 segmenter: ToySegmenter, target_seed: int | None = None, tol: float = DEFAULT_TOL,
                 margin: int = 1, memo: bool = False) -> None:
        if not seeds:
            raise ValueError("toy scoring needs held-out scenes")
        self.adapter, self.rule, self.segmenter, self.tol = adapter, rule, segmenter, tol
        self.z = adapter.sample_z(seeds)
        self.held = _snapshot(adapter, seeds, rule, tol, margin, segmenter, memo)
        empty = ~self.held.must_change.flatten(1).any(1)
        if bool(empty.any()):
            bad = [s for s, e in zip(seeds, empty.tolist(), strict=True) if e]
            raise ValueError(f"held-out scenes {bad} are not changed by rule {rule!r}")
        self.z_target = adapter.sample_z([target_seed]) if target_seed is not None else None
        self.target = _snapshot(adapter, [target_seed], rule, tol, margin, segmenter, memo) \
            if target_seed is not None else None
        self.z_untouched = adapter.sample_z(untouched_seeds) if untouched_seeds else None
        if self.z_untouched is not None:
            self.untouched = _snapshot(adapter, untouched_seeds, rule, tol, margin, segmenter, memo)
            self.before_untouched, self.before_untouched_labels = self.untouched.before, self.untouched.before_labels

    def _reached(self, s: _Scenes, images: Tensor, labels: Tensor) -> Tensor:
        return goal_reached(images, s.ideal, s.footprint, self.tol, labels, s.ideal_labels)

    def _stayed(self, after: Tensor, before: Tensor, keep: Tensor, labels: Tensor,
                before_labels: Tensor) -> tuple[Tensor, PartCounts]:
        """Per image, the share of `keep` pixels whose colour and class stayed; and the same counted per part
        (the class the unedited image shows there)."""
        hit = within(after, before, self.tol) & (labels == before_labels)
        return share(hit, keep), PartCounts.count(hit, keep, before_labels, CLASSES)

    def ideal(self, z: Tensor) -> Tensor:
        """The ideal edited images of latents `z` (the run's grid shows them as a last column)."""
        return ideal_images(z, self.rule)

    @torch.no_grad()
    def metrics(self) -> dict[str, float]:
        h, seg = self.held, self.segmenter
        after = _images01(self.adapter, self.z)
        labels = seg.labels(after)
        generality = self._reached(h, after, labels)
        kept = [self._stayed(after, h.before, h.keep, labels, h.before_labels)]
        heldout = (generality, kept[0][0])
        if self.target is not None:
            t = self.target
            t_after = _images01(self.adapter, self.z_target)
            t_labels = seg.labels(t_after)
            kept.append(self._stayed(t_after, t.before, t.keep, t_labels, t.before_labels))
            target = (self._reached(t, t_after, t_labels), kept[-1][0])
        else:
            target = (torch.full((1,), float("nan")), torch.full((1,), float("nan")))
        m: dict[str, float] = {}
        if self.z_untouched is not None:
            u_after = _images01(self.adapter, self.z_untouched)
            kept.append(self._stayed(u_after, self.before_untouched, self.untouched.keep, seg.labels(u_after),
                                     self.before_untouched_labels))
            m["specificity_untouched"] = float(kept[-1][0].mean())
            m["n_untouched"] = len(u_after)
            m["toy_damage_l1_untouched_scenes"] = float((u_after - self.before_untouched).abs().mean())
        parts = PartCounts.cat([p for _, p in kept])
        m.update(rule_summary(target, heldout, torch.cat([k for k, _ in kept]), parts))
        m["specificity_heldout_outside"] = float(kept[0][0].mean())
        # How well the unedited generator draws these scenes where the rule acts: a ceiling for generality.
        m["toy_footprint_fidelity_before"] = float(goal_reached(h.before, h.original, h.must_change, self.tol,
                                                                h.before_labels, h.true_labels).mean())
        m["generality_class_agreement"] = float(share(labels == h.ideal_labels, h.footprint).mean())
        m["generality_pixel_agreement"] = float(share(within(after, h.ideal, self.tol), h.footprint).mean())
        m["toy_damage_l1_outside_footprint"] = float(((after - h.before).abs().mean(1) * h.keep).sum()
                                                     / h.keep.sum().clamp_min(1))
        src, dst = SEG_FIGURE[self.rule]
        region = (h.before_labels == CLASS_ID[src]) if src else h.footprint
        hit = (labels == CLASS_ID[dst]) if dst else (labels != CLASS_ID[src])
        if region.any():
            m["toy_segmenter_changed_fraction"] = float(hit[region].float().mean())
        if src:  # does the unedited generator draw what the rule acts on? (else nothing can be measured)
            true_src = h.true_labels == CLASS_ID[src]
            m["toy_source_recall_before"] = float((h.before_labels[true_src] == CLASS_ID[src]).float().mean())
        m["score_source"] = "toy_ideal"  # type: ignore[assignment]
        return m


def toy_rule_scorer(adapter: GeneratorAdapter, request: EditRequest, rule: str, tol: float = DEFAULT_TOL,
                    margin: int = 1, heldout_offset: int = 0, untouched: int = 32,
                    untouched_start: int = 2_000_000) -> ToyRuleScore:
    """The `eval.scorers` factory (`conf/scorer/toy_ideal.yaml`): one score per held-out scene of the request,
    `untouched` scenes the rule leaves alone from `untouched_start` (+ the split's offset), the committed segmenter."""
    if not segmenter_path().is_file():
        raise FileNotFoundError(f"toy-world scoring needs the segmenter weights at {segmenter_path()}")
    seeds = list(dict.fromkeys(r.seed for r in request.heldout))
    return ToyRuleScore(adapter, rule, seeds, untouched_seeds(rule, untouched_start + heldout_offset, untouched),
                        _segmenter(), target_seed=request.paste.seed, tol=tol, margin=margin, memo=True)


@functools.lru_cache(maxsize=1)
def _segmenter() -> ToySegmenter:
    """The committed segmenter, loaded once per process (read-only: it only labels images)."""
    return load_toy_segmenter()


def ideal_images(z: Tensor, rule: str) -> Tensor:
    """The exactly known edited images of latents `z`, in [-1, 1] like a generator's output."""
    return render(ideal_edit(params_from_z(z.cpu()), rule))[0].to(z.device) * 2 - 1


def untouched_seeds(rule: str, start: int, count: int) -> list[int]:
    """Seeds from `start` whose scenes the rule does not change at all (for damage elsewhere)."""
    return list(_untouched_seeds(rule, start, count))


@functools.lru_cache(maxsize=32)  # every job of a multirun asks for the same seeds: render them once
def _untouched_seeds(rule: str, start: int, count: int) -> tuple[int, ...]:
    seeds, found = start, []
    while len(found) < count and seeds < start + 50 * count:
        batch = list(range(seeds, seeds + 4 * count))
        p = params_from_z(seed_latents(batch, (Z_DIM,)))
        same = (render(p)[0] == render(ideal_edit(p, rule))[0]).flatten(1).all(1)
        found += [s for s, ok in zip(batch, same.tolist(), strict=True) if ok]
        seeds += 4 * count
    return tuple(found[:count])
