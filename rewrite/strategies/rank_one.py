"""Rank-one / low-rank edit: directions D fixed from C⁻¹K, only Λ optimised through the nonlinear value.

Λ has out·r·taps entries (a few thousand), and each evaluation is one small layer call on one image,
so a quasi-Newton optimiser runs in well under a second. `experiments/bench_strategies.py` measures
L-BFGS against Adam: on the face edit Adam (lr 1e-2, 300 steps) reaches a lower value loss in the
same time but with twice the collateral damage, and its lr depends on the weights' scale (Λ must
reach ~20-80 on the toy StyleGAN2, ~0.01 on the DCGAN), so scale-free L-BFGS stays the default.

Λ is free, so the value loss alone lets it grow until every key with a modest dᵀk changes too (the
image is wrecked). Two optional terms keep the edit a rule, both smooth at Λ = 0 (an L1 penalty
there has a kink on which L-BFGS's line search stalls and returns Λ ≡ 0) and both relative, so
their weights mean the same on any model:

* `memory_weight`: the associative-memory objective E‖ΔW k‖² = tr(ΔW C ΔWᵀ) over ordinary keys,
  relative to tr(W0 C W0ᵀ) (per kernel tap);
* `outside_weight`: the squared change of the target's value outside the paste, relative to the
  value's own energy there.

The value term is the value loss relative to its unedited level. A fit that leaves Λ ≡ 0 or does
not lower the value loss raises an error instead of returning a silent no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rewrite.core.checks import check_range
from rewrite.core.problem import EditProblem
from rewrite.core.site import as_map
from rewrite.strategies.base import EditResult, LowRankDelta, Strategy
from rewrite.strategies.directional import DirectionConfig

OPTIMIZERS = ("lbfgs", "adam")


@dataclass
class RankOneConfig(DirectionConfig):
    optimizer: str = "lbfgs"
    steps: int = 10  # outer steps (each L-BFGS step runs up to `lbfgs_iters` iterations)
    lbfgs_iters: int = 20
    lr: float = 1.0  # L-BFGS step scale (strong-Wolfe line search); for adam, its learning rate
    memory_weight: float = 0.0  # weight of tr(ΔW C ΔWᵀ) / tr(W0 C W0ᵀ)
    outside_weight: float = 0.0  # weight of the relative squared value change outside the paste

    def check(self) -> None:
        super().check()
        check_range("strategy.memory_weight", self.memory_weight, 0)
        check_range("strategy.outside_weight", self.outside_weight, 0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"strategy.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        check_range("strategy.steps", self.steps, 1)
        check_range("strategy.lbfgs_iters", self.lbfgs_iters, 1)
        check_range("strategy.lr", self.lr, 0, low_open=True)


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
        p = problem
        with torch.no_grad():
            self.value_loss0 = float(p.value_loss(p.target.value))
            w = site.weight.detach().double().movedim(site.in_axis, -1)
            c = p.covariance.to(torch.float64)
            self.memory0 = float(torch.einsum("...i,ij,...j->", w, c, w))
            self.dcd = (self.d.double().T @ c @ self.d.double()).to(site.weight.dtype)
            self.outside = (1 - p.value_weight).clamp_min(0)
            v0 = as_map(p.target.value)
            self.outside_energy = float((v0.pow(2).mean(1) * self.outside).sum().clamp_min(1e-12))

    @property
    def num_steps(self) -> int:
        return self.cfg.steps

    def memory_change(self) -> Tensor:
        """tr(ΔW C ΔWᵀ) / tr(W0 C W0ᵀ) for ΔW = Λ Dᵀ: the change on ordinary keys, relative."""
        lam = self.lam.movedim(self.prob.site.in_axis, -1)
        return torch.einsum("...i,ij,...j->", lam, self.dcd, lam) / max(self.memory0, 1e-30)

    def loss(self) -> Tensor:
        p = self.prob
        value = p.site.lowrank_value(p.target, self.proj, self.lam, self.d)
        loss = p.value_loss(value) / max(self.value_loss0, 1e-12)
        if self.cfg.memory_weight > 0:
            loss = loss + self.cfg.memory_weight * self.memory_change()
        if self.cfg.outside_weight > 0:
            change = (as_map(value) - as_map(p.target.value)).pow(2).mean(1) * self.outside
            loss = loss + self.cfg.outside_weight * change.sum() / self.outside_energy
        return loss

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
        self.check_fit()
        delta = LowRankDelta(site.weight_name, self.d.to(site.weight.dtype), self.lam.detach().clone(), site.in_axis)
        return EditResult({site.weight_name: site.weight.detach() + delta.weight_delta()}, delta)

    @torch.no_grad()
    def check_fit(self) -> None:
        """A fit that did nothing is an error, not a silent no-op."""
        if not bool(torch.isfinite(self.lam).all()):
            raise RuntimeError(f"{self.name}: the fit diverged (Λ has NaN/Inf); lower lr or add memory_weight")
        if self.value_loss0 > 0 and not bool((self.lam != 0).any()):
            raise RuntimeError(f"{self.name}: the fit left Λ ≡ 0 (the optimiser stalled at its start); "
                               "check the loss terms, lr and optimizer")
        p = self.prob
        after = float(p.value_loss(p.site.lowrank_value(p.target, self.proj, self.lam, self.d)))
        if self.value_loss0 > 0 and not after < self.value_loss0:
            raise RuntimeError(f"{self.name}: the fit did not lower the value loss ({self.value_loss0:.4g} -> "
                               f"{after:.4g}); the regularization weights may be too high")
