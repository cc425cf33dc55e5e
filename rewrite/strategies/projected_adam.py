"""The original recipe (davidbau/rewriting) as the reference: Adam on the whole weight, L1 value loss,
projection back onto W0 + (component along D) every `project_every` steps and after the last.

Defaults are faithful to it (2001 steps, lr 0.05). That lr suits StyleGAN2's equalised-lr weights;
on raw weights such as a DCGAN's it overshoots, so benchmarks sweep lr (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rewrite.core.checks import check_range
from rewrite.core.problem import EditProblem
from rewrite.strategies.base import EditResult, LowRankDelta
from rewrite.strategies.directional import DirectionConfig
from rewrite.strategies.layer_finetune import LayerFinetune, LayerFinetuneConfig


@dataclass
class ProjectedAdamConfig(LayerFinetuneConfig, DirectionConfig):
    steps: int = 2001
    lr: float = 0.05
    project_every: int = 10

    def check(self) -> None:
        LayerFinetuneConfig.check(self)
        DirectionConfig.check(self)
        check_range("strategy.project_every", self.project_every, 1)


class ProjectedAdam(LayerFinetune):
    Config = ProjectedAdamConfig
    name = "projected_adam"

    def setup(self, problem: EditProblem) -> None:
        super().setup(problem)
        self.d = problem.directions(self.cfg.rank, self.cfg.key_method, self.cfg.use_context).to(self.w0.dtype)

    @torch.no_grad()
    def after_step(self, index: int) -> None:
        if (index + 1) % self.cfg.project_every == 0 or index + 1 == self.num_steps:
            self.w.copy_(self.w0 + self.prob.site.project_weight(self.w - self.w0, self.d))

    def result(self) -> EditResult:
        site = self.prob.site
        lam = site.coordinates(self.w.detach() - self.w0, self.d)
        delta = LowRankDelta(site.weight_name, self.d, lam, site.in_axis)
        return EditResult({site.weight_name: self.w0 + delta.weight_delta()}, delta)
