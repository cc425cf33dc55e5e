"""Unconstrained fine-tune of the one layer's whole weight (ablation: no covariance, no rank limit)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rewrite.core.checks import check_range
from rewrite.core.problem import EditProblem
from rewrite.strategies.base import EditResult, Strategy, StrategyConfig


@dataclass
class LayerFinetuneConfig(StrategyConfig):
    steps: int = 2001
    lr: float = 5e-4

    def check(self) -> None:
        check_range("strategy.steps", self.steps, 1)
        check_range("strategy.lr", self.lr, 0, low_open=True)


class LayerFinetune(Strategy):
    """Adam on W with the L1 value loss at the paste site."""

    Config = LayerFinetuneConfig
    name = "layer_finetune"

    def setup(self, problem: EditProblem) -> None:
        self.problem = problem
        self.w0 = problem.site.weight.detach().clone()
        self.w = self.w0.clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.w], lr=self.cfg.lr)

    @property
    def num_steps(self) -> int:
        return self.cfg.steps

    def after_step(self, index: int) -> None:
        """Hook for constrained variants (projection)."""

    def step(self, index: int) -> Tensor:
        assert self.optimizer is not None
        p = self.prob
        with torch.enable_grad():
            self.optimizer.zero_grad()
            loss = p.value_loss(p.site.value_forward(p.target, self.w))
            loss.backward()
            self.optimizer.step()
        self.after_step(index)
        return loss.detach()

    def result(self) -> EditResult:
        return EditResult({self.prob.site.weight_name: self.w.detach().clone()})
