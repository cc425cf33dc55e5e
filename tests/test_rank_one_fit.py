"""rank_one's fit that keeps the edit a rule: the memory term against a direct computation, no silent no-ops."""

from __future__ import annotations

import pytest
import torch

from rewrite.core.problem import EditProblem
from rewrite.core.stats import key_rows
from rewrite.strategies.rank_one import RankOne


def test_memory_change_is_the_change_on_ordinary_keys(problem: EditProblem) -> None:
    # Independent: C from explicit key rows, E‖ΔW_t k‖² summed over taps by direct matrix products.
    site = problem.site
    rows = key_rows(site.capture(site.adapter.sample_z_stream(16, 5)).keys).double()
    problem.covariance = rows.T @ rows / len(rows)
    s = RankOne(rank=2)
    s.setup(problem)
    with torch.no_grad():
        s.lam.copy_(torch.randn(s.lam.shape, generator=torch.Generator().manual_seed(0)))
    dw = site.expand(s.lam.detach(), s.d).double().movedim(site.in_axis, -1)  # (..., in): one row per (out, tap)
    w0 = site.weight.detach().double().movedim(site.in_axis, -1)
    direct = (rows @ dw.reshape(-1, dw.shape[-1]).T).pow(2).sum(1).mean()
    direct0 = (rows @ w0.reshape(-1, w0.shape[-1]).T).pow(2).sum(1).mean()
    assert float(s.memory_change().detach()) == pytest.approx(float(direct / direct0), rel=1e-4)


def test_smooth_terms_do_not_stall_lbfgs_at_zero(problem: EditProblem) -> None:
    start = float(problem.value_loss(problem.target.value))
    for kw in ({"outside_weight": 1.0}, {"memory_weight": 1.0}, {"outside_weight": 1.0, "memory_weight": 1.0}):
        res = RankOne(**kw).run(problem)
        assert res.delta is not None and res.delta.lam.abs().max() > 0, kw
        edited = res.weights[problem.site.weight_name]
        after = float(problem.value_loss(problem.site.value_forward(problem.target, edited)))
        assert after < start, kw


def test_memory_weight_trades_value_loss_for_less_change(problem: EditProblem) -> None:
    free, held = RankOne(), RankOne(memory_weight=10.0)
    free.run(problem)
    held.run(problem)
    assert float(held.memory_change()) < float(free.memory_change())
    assert float(held.lam.norm()) < float(free.lam.norm())


def test_a_fit_that_does_nothing_is_an_error(problem: EditProblem) -> None:
    s = RankOne()
    s.setup(problem)
    with pytest.raises(RuntimeError, match="Λ ≡ 0"):
        s.result()
    with torch.no_grad():
        s.lam.copy_(1e3 * torch.randn(s.lam.shape, generator=torch.Generator().manual_seed(0)))
        after = problem.value_loss(problem.site.lowrank_value(problem.target, s.proj, s.lam, s.d))
    assert float(after) > float(problem.value_loss(problem.target.value))  # far off: the value loss rises
    with pytest.raises(RuntimeError, match="did not lower the value loss"):
        s.result()
    with torch.no_grad():
        s.lam.fill_(float("nan"))
    with pytest.raises(RuntimeError, match="diverged"):
        s.result()
