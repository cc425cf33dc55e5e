"""One evaluator for every strategy: the rule scores against the paste goal, damage, and diagnostics.

Models without ground truth: the goal for each held-out sample is the request's own paste applied
to *that* sample (the source's copied region pasted at the held-out region, which must have the
copied region's size), scored per pixel with `rewrite.eval.rule_metrics` and per position at the value
layer, never through pooled means. A snapshot of the unedited model is taken at construction;
`metrics()` is called with the edit applied. Perceptual numbers carry the distance's own name
(e.g. `effnet_lite0_feature_distance` when LPIPS weights are absent), never a borrowed one.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import Tensor

from rewrite.core.checks import integer, number
from rewrite.core.erase import erase_value, generate_with_value
from rewrite.core.perceptual import PerceptualDistance
from rewrite.core.problem import EditProblem, paste, paste_offset, select
from rewrite.core.request import resample
from rewrite.core.site import as_map
from rewrite.eval.rule_metrics import (
    DEFAULT_TOL,
    change_footprint,
    dilate,
    goal_image_scores,
    rule_summary,
    share,
    stayed,
    to01,
)
from rewrite.strategies.base import EditResult

log = logging.getLogger(__name__)


def value_goal_reached(v0: Tensor, v1: Tensor, goal: Tensor, alpha: Tensor) -> float:
    """Share of the pasted value positions (alpha ≥ ½) where the edit closed at least half the
    distance to the goal *at that position*; positions already at the goal are not counted."""
    a, b, g = as_map(v0)[0], as_map(v1)[0], as_map(goal)[0]
    d0, d1 = (a - g).norm(dim=0), (b - g).norm(dim=0)
    where = (alpha >= 0.5) & (d0 > 1e-6 * (a.norm(dim=0).mean() + 1e-12))
    return float(share((d1 <= 0.5 * d0)[None], where[None])[0])


def erase_goals(problem: EditProblem, z: Tensor, values: Tensor,
                masks: Tensor) -> list[tuple[int, Tensor, Tensor, Tensor]]:
    """Erase requests: each held-out region's goal is the same erase (the problem's units switched off
    inside that region) applied to that sample, as (index, goal image, goal value, value alpha)."""
    assert problem.erase_units is not None
    goals = []
    for i, mask in enumerate(masks):
        v = values[i : i + 1]
        alpha = resample(mask, *as_map(v).shape[-2:])
        value = erase_value(v, problem.erase_units, alpha)
        goals.append((i, generate_with_value(problem.site, z[i : i + 1], value), value, alpha))
    return goals


class Evaluator:
    def __init__(self, problem: EditProblem, perceptual: PerceptualDistance | None, tol: float = DEFAULT_TOL,
                 margin: int = 1) -> None:
        # checked before the snapshot below: a bad tolerance would otherwise surface only after the edit
        self.tol = number("tol", tol, 0, 1, low_open=True)
        self.margin = integer("margin", margin, 0)
        self.problem, self.perceptual = problem, perceptual
        site, adapter, size = problem.site, problem.site.adapter, problem.size
        req = problem.request
        self.paste_mask = req.paste.mask(size)
        self.before_target = adapter.generate(problem.z_target)
        self.value_loss_before = float(problem.value_loss(site.capture(problem.z_target).value))
        # Held-out samples: unedited images, keys (for selectivity) and values, and their paste goals.
        self.z_heldout = adapter.sample_z([r.seed for r in req.heldout]) if req.heldout else None
        self.heldout_masks = torch.stack([r.mask(size) for r in req.heldout]) if req.heldout else None
        self.goals: list[tuple[int, Tensor, Tensor, Tensor]] = []  # (index, goal image, goal value, value alpha)
        if self.z_heldout is not None:
            self.before_heldout = adapter.generate(self.z_heldout)
            held = site.capture(self.z_heldout)  # one pass for all held-out samples
            self.keys_heldout, self.values_heldout = held.keys, held.value
            if problem.erase_units is not None:
                self.goals = erase_goals(problem, self.z_heldout, self.values_heldout, self.heldout_masks)
            else:
                src = site.capture(problem.z_source)
                src_img = adapter.generate(problem.z_source)
                copy_mask = req.copy.mask(size)
                for i, r in enumerate(req.heldout):
                    offset = paste_offset(req.copy, r, size)
                    if offset is None:
                        continue
                    img, _ = paste(src_img, self.before_heldout[i : i + 1], copy_mask, offset, size)
                    val, alpha = paste(src.value, self.values_heldout[i : i + 1], copy_mask, offset, size)
                    self.goals.append((i, img, val, alpha))
                if len(self.goals) < len(req.heldout):
                    log.info("paste-goal scores use %d of %d held-out regions (the others differ in size from the "
                             "copied region)", len(self.goals), len(req.heldout))

    def for_problem(self, problem: EditProblem) -> Evaluator:
        """This evaluator (its snapshot of the unedited model) scoring `problem`: the same problem built on
        another adapter with the same weights, as a later job of a multirun has (`rewrite.core.shared`)."""
        if problem.request != self.problem.request:
            raise ValueError("an evaluator scores only the request it snapshot the unedited model for")
        bound = copy.copy(self)
        bound.problem = problem
        return bound

    def _damage(self, before: Tensor, after: Tensor, outside: Tensor, prefix: str) -> dict[str, float]:
        """L1 and perceptual distance restricted to `outside` (N, S, S) weights."""
        m = outside[:, None]
        l1 = ((after - before).abs().mean(1, keepdim=True) * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1)
        out = {f"{prefix}_l1": float(l1.mean())}
        if self.perceptual is not None:
            out[f"{prefix}_{self.perceptual.name}"] = float(self.perceptual(before, after, m).mean())
        return out

    def _paste_goal_scores(self, after_target: Tensor, after_heldout: Tensor | None) -> dict[str, float]:
        """Efficacy / generality / specificity against the paste goal, per pixel (+ per value position)."""
        p, tol, margin = self.problem, self.tol, self.margin
        reached0, keep0 = goal_image_scores(to01(self.before_target), to01(after_target), to01(p.target_image), tol,
                                            margin)
        keep = [keep0]
        gen, gen_value, change_px = [], [], []
        if self.goals:
            assert after_heldout is not None and self.z_heldout is not None
            values_after = p.site.capture(self.z_heldout).value  # one pass for all held-out samples
        for i, img, val, alpha in self.goals:
            b, g = to01(self.before_heldout[i : i + 1]), to01(img)
            reached, kept = goal_image_scores(b, to01(after_heldout[i : i + 1]), g, tol, margin)
            gen.append(reached)
            keep.append(kept)
            change_px.append(float(change_footprint(b, g, tol).sum()))
            gen_value.append(value_goal_reached(self.values_heldout[i : i + 1], values_after[i : i + 1], val, alpha))
        if after_heldout is not None:  # held-out regions with no paste goal still count for specificity
            scored = {i for i, *_ in self.goals}
            for i in range(len(after_heldout)):
                if i not in scored:
                    b, a = to01(self.before_heldout[i : i + 1]), to01(after_heldout[i : i + 1])
                    outside = ~dilate(self.heldout_masks[i : i + 1] > 0, self.margin)
                    keep.append(stayed(a, b, outside, tol))
        nan = torch.full((1,), float("nan"))
        heldout = (torch.cat(gen), torch.cat(keep[1 : 1 + len(gen)])) if gen else (nan, nan)
        summary = rule_summary((reached0, keep0), heldout, torch.cat(keep))
        out = {f"paste_goal_{k}": v for k, v in summary.items()}
        if gen_value:
            out["paste_goal_generality_value"] = sum(gen_value) / len(gen_value)
            # How much the goal asks for: a goal that changes a handful of pixels is reached trivially.
            out["paste_goal_change_px"] = sum(change_px) / len(change_px)
        return out

    def key_selectivity(self, d: Tensor) -> dict[str, float]:
        """How selectively the update directions fire: mean ‖Dᵀk‖ inside held-out regions over outside.

        A rule edit needs D to respond to unseen instances of the region and stay quiet elsewhere;
        below ~1 the edit cannot generalize without changing everything else too.
        """
        p = self.problem

        def resp(keys: Tensor) -> Tensor:  # ‖Dᵀk‖ at every position of one image's (1, in, H, W) keys
            return torch.einsum("nihw,ir->nrhw", keys.double(), d.double()).norm(dim=1)[0]

        hk, wk = p.keys.shape[-2:]
        target = resp(p.keys)[select(self.paste_mask, hk, wk)].mean()
        out = {"key_response_target": float(target)}
        if self.z_heldout is not None:
            cells: dict[int, Tensor] = {}  # per held-out seed, every cell of its regions (a scene may have several)
            for r in p.request.heldout:
                sel = select(r.mask(p.size), hk, wk)
                cells[r.seed] = cells[r.seed] | sel if r.seed in cells else sel
            inside, outside, seen = [], [], set()
            for i, r in enumerate(p.request.heldout):
                if r.seed in seen:
                    continue
                seen.add(r.seed)
                rr = resp(self.keys_heldout[i : i + 1])
                inside.append(rr[cells[r.seed]])
                outside.append(rr[~cells[r.seed]])
            i_mean, o_mean = torch.cat(inside).mean(), torch.cat(outside).mean()
            out.update(key_response_heldout_in=float(i_mean), key_response_heldout_out=float(o_mean),
                       key_selectivity=float(i_mean / o_mean.clamp_min(1e-12)))
        return out

    @torch.no_grad()
    def metrics(self, result: EditResult | None = None) -> dict[str, float]:
        """Scores of the edit now applied to the model; `result` adds direction diagnostics."""
        p, site = self.problem, self.problem.site
        adapter = site.adapter
        after_target = adapter.generate(p.z_target)
        out: dict[str, float] = {
            "value_loss_before": self.value_loss_before,
            "value_loss": float(p.value_loss(site.capture(p.z_target).value)),
        }
        out.update(self._damage(self.before_target, after_target, (1 - self.paste_mask)[None], "target_outside"))
        after_heldout = None
        if self.z_heldout is not None:
            after_heldout = adapter.generate(self.z_heldout)
            out.update(self._damage(self.before_heldout, after_heldout, 1 - self.heldout_masks, "heldout_collateral"))
        scores = self._paste_goal_scores(after_target, after_heldout)
        out.update(scores)
        # Headline names: the paste goal here; a ground-truth scorer (toy world) replaces them.
        for k in ("efficacy", "generality", "specificity", "edit_score"):
            for suffix in ("", "_ci_low", "_ci_high"):
                out[k + suffix] = scores[f"paste_goal_{k}{suffix}"]
        out["n_heldout"] = scores["paste_goal_n_heldout"]
        out["efficacy_footprint"] = scores["paste_goal_efficacy_footprint"]
        out["generality_footprint"] = scores["paste_goal_generality_footprint"]
        out["score_source"] = "paste_goal"  # type: ignore[assignment]
        if result is not None and result.delta is not None:
            out.update(self.key_selectivity(result.delta.directions))
        return out

