"""One evaluator for every strategy: efficacy at the paste site, collateral damage, generalization.

A snapshot of the unedited model's outputs is taken first (`Evaluator(...)`); `metrics()` is then
called with the edit applied. Perceptual numbers carry the distance's own name (e.g.
`effnet_lite0_feature_distance` when LPIPS weights are absent), never a borrowed one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rewrite.perceptual import PerceptualDistance
from rewrite.problem import EditProblem, select
from rewrite.site import as_map


def _pooled(value: Tensor, cells: Tensor) -> Tensor:
    """Mean feature vector of a (1, C, H, W) map over the selected cells."""
    v = as_map(value)[0]
    return v[:, cells].mean(1)


class Evaluator:
    def __init__(self, problem: EditProblem, perceptual: PerceptualDistance | None) -> None:
        self.problem = problem
        self.perceptual = perceptual
        site, adapter, size = problem.site, problem.site.adapter, problem.size
        req = problem.request
        self.z_heldout = adapter.sample_z([r.seed for r in req.heldout]) if req.heldout else None
        # Where the rule should act on held-out seeds; outside it every change counts as damage.
        self.heldout_masks = torch.stack([r.mask(size) for r in req.heldout]) if req.heldout else None
        self.paste_mask = req.paste.mask(size)
        self.before_target = adapter.generate(problem.z_target)
        self.value_loss_before = float(problem.value_loss(site.capture(problem.z_target).value))
        if self.z_heldout is not None:
            self.before_heldout = adapter.generate(self.z_heldout)
            self.values_before = [site.capture(z[None]).value for z in self.z_heldout]
        w = problem.value_weight
        self.goal = (as_map(problem.target_value)[0] * w).sum((1, 2)) / w.sum()  # mean pasted feature

    def _damage(self, before: Tensor, after: Tensor, outside: Tensor, prefix: str) -> dict[str, float]:
        """L1 and perceptual distance restricted to `outside` (N, S, S) weights."""
        m = outside[:, None]
        l1 = ((after - before).abs().mean(1, keepdim=True) * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1)
        out = {f"{prefix}_l1": float(l1.mean())}
        if self.perceptual is not None:
            out[f"{prefix}_{self.perceptual.name}"] = float(self.perceptual(before, after, m).mean())
        return out

    @torch.no_grad()
    def metrics(self) -> dict[str, float]:
        p, site = self.problem, self.problem.site
        adapter = site.adapter
        after_target = adapter.generate(p.z_target)
        out = {
            "value_loss_before": self.value_loss_before,
            "value_loss": float(p.value_loss(site.capture(p.z_target).value)),
            "target_image_l1_to_goal": float((after_target - p.target_image).abs().mean()),
        }
        out.update(self._damage(self.before_target, after_target, (1 - self.paste_mask)[None], "target_outside"))
        if self.z_heldout is not None:
            after = adapter.generate(self.z_heldout)
            out.update(self._damage(self.before_heldout, after, 1 - self.heldout_masks, "heldout_collateral"))
            shifts = []
            for z, v0, r in zip(self.z_heldout, self.values_before, p.request.heldout, strict=True):
                v1 = site.capture(z[None]).value
                cells = select(r.mask(p.size), *as_map(v1).shape[-2:])
                d0 = (_pooled(v0, cells) - self.goal).norm()
                d1 = (_pooled(v1, cells) - self.goal).norm()
                shifts.append(float(1 - d1 / d0.clamp_min(1e-12)))
            # Fraction of the feature distance to the pasted content closed on held-out regions.
            out["heldout_value_shift_to_goal"] = sum(shifts) / len(shifts)
        return out
