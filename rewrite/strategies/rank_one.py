"""Rank-one / low-rank edit: directions D fixed from C⁻¹K, only Λ optimised through the nonlinear value.

Λ has out·r·taps entries (a few thousand), and each evaluation is one small layer call on one image,
so a quasi-Newton optimiser runs in well under a second. `experiments/bench_strategies.py` measures
L-BFGS against Adam: on the face edit Adam (lr 1e-2, 300 steps) reaches a lower value loss in the
same time but with twice the collateral damage, and its lr depends on the weights' scale (Λ must
reach ~20-80 on the toy StyleGAN2, ~0.01 on the DCGAN), so scale-free L-BFGS stays the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rewrite.problem import EditProblem
from rewrite.strategies.base import EditResult, LowRankDelta, Strategy
from rewrite.strategies.directional import DirectionConfig

OPTIMIZERS = ("lbfgs", "adam")


@dataclass
class RankOneConfig(DirectionConfig):
    optimizer: str = "lbfgs"
    steps: int = 10  # outer steps (each L-BFGS step runs up to `lbfgs_iters` iterations)
    lbfgs_iters: int = 20
    lr: float = 1.0  # L-BFGS step scale (strong-Wolfe line search); for adam, its learning rate

    def check(self) -> None:
        super().check()
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.steps < 1 or self.lbfgs_iters < 1 or self.lr <= 0:
            raise ValueError("steps and lbfgs_iters must be ≥ 1 and lr > 0")


class RankOne(Strategy):
    Config = RankOneConfig
    name = "rank_one"

    def setup(self, problem: EditProblem) -> None:
        self.problem = problem
        site = problem.site
        self.d = problem.directions(self.cfg.rank, self.cfg.key_method, self.cfg.use_context)
        self.proj = site.project_keys(problem.keys, self.d).to(site.weight.dtype)
        shape = list(site.weight.shape)
        shape[site.in_axis] = self.cfg.rank
        self.lam = torch.zeros(shape, dtype=site.weight.dtype, requires_grad=True)
        if self.cfg.optimizer == "lbfgs":
            # Near-zero tolerances: L-BFGS's defaults are absolute, and through an equalized-lr,
            # demodulated StyleGAN2 layer the gradient wrt Λ is ~1e-6, which they mistake for convergence.
            self.optimizer = torch.optim.LBFGS([self.lam], lr=self.cfg.lr, max_iter=self.cfg.lbfgs_iters,
                                               tolerance_grad=1e-12, tolerance_change=1e-15,
                                               line_search_fn="strong_wolfe")
        else:
            self.optimizer = torch.optim.Adam([self.lam], lr=self.cfg.lr)

    @property
    def num_steps(self) -> int:
        return self.cfg.steps

    def loss(self) -> Tensor:
        p = self.prob
        return p.value_loss(p.site.lowrank_value(p.target, self.proj, self.lam, self.d))

    def step(self, index: int) -> Tensor:
        assert self.optimizer is not None

        def closure() -> Tensor:
            self.optimizer.zero_grad()
            loss = self.loss()
            loss.backward()
            return loss

        with torch.enable_grad():
            loss = self.optimizer.step(closure)
        return loss.detach()

    def result(self) -> EditResult:
        site = self.prob.site
        delta = LowRankDelta(site.weight_name, self.d.to(site.weight.dtype), self.lam.detach().clone(), site.in_axis)
        return EditResult({site.weight_name: site.weight.detach() + delta.weight_delta()}, delta)
