"""Exact least-squares edit of the layer's linear part, rank r, no iterations.

With ΔW = Λ Dᵀ the layer output changes by `conv(Dᵀk; Λ)`, linear in Λ, so the Λ that best
reaches the pasted layer output v* (weighted by the paste alpha) is one least-squares solve in
float64 (minimum-norm when under-determined). For one key and r = 1 on a linear layer this is the
paper's Λ = (v* − W0 k*) / (dᵀ k*) with d = C⁻¹k*. The nonlinearity after the layer is ignored
(that is what `rank_one` optimises).

`memory_weight` > 0 adds the associative-memory term of `rank_one` to the same least squares
(relative residual + memory_weight · tr(ΔW C ΔWᵀ) / tr(W0 C W0ᵀ)), still one solve: a ridge along
DᵀCD that keeps Λ from growing where D barely fires on the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rewrite.core.checks import check_range
from rewrite.core.problem import EditProblem
from rewrite.core.site import as_map
from rewrite.strategies.base import EditResult, LowRankDelta, Strategy
from rewrite.strategies.directional import DirectionConfig


@dataclass
class ClosedFormConfig(DirectionConfig):
    memory_weight: float = 0.0  # weight of tr(ΔW C ΔWᵀ) / tr(W0 C W0ᵀ) against the relative residual

    def check(self) -> None:
        super().check()
        check_range("strategy.memory_weight", self.memory_weight, 0)


def lambda_basis(taps: tuple[int, ...], rank: int) -> Tensor:
    """Every unit Λ for one output channel, stacked on the output axis: (P, r, *taps), P = r·taps."""
    p = rank * math.prod(taps)
    return torch.eye(p, dtype=torch.float64).reshape(p, rank, *taps)


def memory_energy(problem: EditProblem) -> float:
    """tr(W0 C W0ᵀ) summed over kernel taps: the layer's output energy on ordinary keys."""
    site = problem.site
    w = site.weight.detach().double().movedim(site.in_axis, -1)
    return float(torch.einsum("...i,ij,...j->", w, problem.covariance.double(), w))


def solve_lambda(problem: EditProblem, d: Tensor, memory_weight: float = 0.0) -> Tensor:
    """Λ (float64) minimising Σ alpha·‖layer_out(W0 + Λ Dᵀ) − v*‖² over the paste site, relative to its
    value at Λ = 0, plus `memory_weight` · tr(ΔW C ΔWᵀ) / tr(W0 C W0ᵀ)."""
    site = problem.site
    proj = site.project_keys(problem.keys.double(), d)
    basis = site.to_weight_layout(lambda_basis(site.taps, d.shape[1]))
    cols = as_map(site.delta_forward(proj, basis))[0]  # (P, H, W)
    w = problem.layer_weight.double()
    sel = (w > 0).flatten()
    sw = w.flatten()[sel].sqrt()[:, None]
    a = cols.reshape(cols.shape[0], -1).T[sel] * sw  # (M, P)
    resid = (as_map(problem.target_layer_out) - as_map(problem.layer_out0)).double()[0]
    b = resid.reshape(resid.shape[0], -1).T[sel] * sw  # (M, out)
    if memory_weight > 0:
        # Per output channel the memory term is xᵀ (DᵀCD ⊗ I_taps) x: stack its square root under A.
        dcd = d.double().T @ problem.covariance.double() @ d.double()
        ridge = torch.kron(dcd, torch.eye(math.prod(site.taps), dtype=torch.float64))
        scale = memory_weight * float(b.pow(2).sum()) / max(memory_energy(problem), 1e-300)
        root = torch.linalg.cholesky(scale * ridge + 1e-12 * scale * torch.eye(len(ridge), dtype=torch.float64))
        a = torch.cat([a, root.T])
        b = torch.cat([b, torch.zeros(root.shape[0], b.shape[1], dtype=b.dtype)])
    x = torch.linalg.lstsq(a, b, driver="gelsd").solution  # (P, out)
    return site.to_weight_layout(x.T.reshape(x.shape[1], d.shape[1], *site.taps))


class ClosedForm(Strategy):
    Config = ClosedFormConfig
    name = "closed_form"

    def setup(self, problem: EditProblem) -> None:
        self.problem = problem
        self.d = problem.directions(self.cfg.rank, self.cfg.key_method, self.cfg.use_context)
        self.lam: Tensor | None = None

    @property
    def num_steps(self) -> int:
        return 1

    @torch.no_grad()
    def step(self, index: int) -> Tensor:
        p = self.prob
        self.lam = solve_lambda(p, self.d, self.cfg.memory_weight)
        w = p.site.weight + p.site.expand(self.lam, self.d).to(p.site.weight.dtype)
        return p.value_loss(p.site.value_forward(p.target, w)).detach()

    def result(self) -> EditResult:
        if self.lam is None:
            raise RuntimeError("closed_form: step() has not run")
        site = self.prob.site
        lam = self.lam.to(site.weight.dtype)
        delta = LowRankDelta(site.weight_name, self.d.to(site.weight.dtype), lam, site.in_axis)
        return EditResult({site.weight_name: site.weight.detach() + delta.weight_delta()}, delta)
