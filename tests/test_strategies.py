"""Strategy behaviour on the tiny generator: constraints, relative quality, determinism."""

from __future__ import annotations

import re

import pytest
import torch

from rewrite.core.problem import EditProblem
from rewrite.strategies.closed_form import ClosedForm
from rewrite.strategies.full_finetune import FullFinetune
from rewrite.strategies.layer_finetune import LayerFinetune
from rewrite.strategies.projected_adam import ProjectedAdam
from rewrite.strategies.rank_one import RankOne
from tests.conftest import tiny_problem


def loss_of(problem: EditProblem, weight: torch.Tensor) -> float:
    return float(problem.value_loss(problem.site.value_forward(problem.target, weight)))


def test_projected_adam_stays_in_span_of_d(problem: EditProblem) -> None:
    res = ProjectedAdam(steps=55, lr=0.01, project_every=10, rank=2).run(problem)
    w0 = problem.site.weight.detach()
    dw = res.weights[problem.site.weight_name] - w0
    assert dw.abs().max() > 0
    d = problem.directions(2, "zca")
    # Independent check: the in-axis rows of ΔW have no component orthogonal to span(D).
    rows = dw.movedim(problem.site.in_axis, -1).reshape(-1, d.shape[0]).double()
    ortho = rows - rows @ d @ d.T
    assert float(ortho.abs().max()) < 1e-6 * float(rows.abs().max())
    assert torch.linalg.matrix_rank(rows, rtol=1e-5).item() <= 2


def test_rank_one_reaches_projected_adam_loss(problem: EditProblem) -> None:
    start = loss_of(problem, problem.site.weight)
    pa = ProjectedAdam(steps=400, lr=0.01).run(problem)
    r1 = RankOne().run(problem)
    pa_loss = loss_of(problem, pa.weights[problem.site.weight_name])
    r1_loss = loss_of(problem, r1.weights[problem.site.weight_name])
    assert pa_loss < start and r1_loss < start
    assert r1_loss <= pa_loss + 1e-6


def test_rank_one_adam_option_and_low_rank(problem: EditProblem) -> None:
    start = loss_of(problem, problem.site.weight)
    adam = RankOne(optimizer="adam", steps=50, lr=0.05).run(problem)
    assert loss_of(problem, adam.weights[problem.site.weight_name]) < start
    r3 = RankOne(rank=3).run(problem)
    assert r3.delta is not None and r3.delta.directions.shape[1] == 3
    assert loss_of(problem, r3.weights[problem.site.weight_name]) < start


@pytest.mark.parametrize("method", ["zca", "svd", "mean", "identity"])
def test_key_methods_run(problem: EditProblem, method: str) -> None:
    res = ClosedForm(key_method=method).run(problem)
    assert torch.isfinite(res.weights[problem.site.weight_name]).all()


def test_layer_finetune_changes_only_the_layer_and_lowers_loss(problem: EditProblem) -> None:
    res = LayerFinetune(steps=60, lr=0.01).run(problem)
    assert set(res.weights) == {problem.site.weight_name} and res.delta is None
    assert loss_of(problem, res.weights[problem.site.weight_name]) < loss_of(problem, problem.site.weight)


def test_full_finetune_lowers_image_loss(problem: EditProblem) -> None:
    strat = FullFinetune(steps=8, lr=1e-3, perceptual="effnet_lite0", preserve_weight=0.5, preserve_samples=2)
    strat.setup(problem)
    losses = [float(strat.step(i)) for i in range(strat.num_steps)]
    assert losses[-1] < losses[0]
    res = strat.result()
    assert set(res.weights) == {k for k, _ in problem.site.adapter.model.named_parameters()}
    # The wrapped model itself is untouched until the result is applied.
    assert torch.equal(problem.site.weight, tiny_problem().site.weight)


def test_same_config_same_weights() -> None:
    a = RankOne().run(tiny_problem())
    b = RankOne().run(tiny_problem())
    for k in a.weights:
        assert torch.equal(a.weights[k], b.weights[k])


def test_bad_strategy_settings_are_clear() -> None:
    with pytest.raises(TypeError, match="unknown settings"):
        RankOne(rnak=2)
    with pytest.raises(ValueError, match="key_method"):
        ClosedForm(key_method="pca")
    with pytest.raises(ValueError, match="optimizer"):
        RankOne(optimizer="sgd")


def test_rank_larger_than_keys_through_a_strategy() -> None:
    # One paste position at the Linear layer (1x1 keys), no context: rank 2 is impossible.
    req = {"copy": {"seed": 1, "box": [0, 0, 16, 16]}, "paste": {"seed": 2, "box": [0, 0, 16, 16]}}
    p = tiny_problem("main.0", "main.3", req)
    with pytest.raises(ValueError, match="larger than the number of keys"):
        ClosedForm(rank=2).run(p)
    assert torch.isfinite(RankOne().run(p).weights["main.0.weight"]).all()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RankOne(rank=1.5), "rank_one: strategy.rank must be an integer, got 1.5"),
        (lambda: RankOne(rank=True), "strategy.rank must be an integer, got True"),
        (lambda: LayerFinetune(lr="abc"), "layer_finetune: strategy.lr must be a finite number, got 'abc'"),
        (lambda: ProjectedAdam(lr=float("inf")), "strategy.lr must be a finite number, got inf"),
        (lambda: RankOne(lr=float("nan")), "strategy.lr must be a finite number, got nan"),
        (lambda: ClosedForm(use_context="yes"), "strategy.use_context must be true or false, got 'yes'"),
        (lambda: ClosedForm(memory_weight=-1), "closed_form: strategy.memory_weight must be ≥ 0, got -1.0"),
        (lambda: FullFinetune(lr=0), "strategy.lr must be > 0, got 0.0"),
        (lambda: FullFinetune(perceptual="vgg"), "strategy.perceptual must be one of"),
    ],
)
def test_settings_are_type_and_range_checked_when_the_strategy_is_built(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make()  # type: ignore[operator]


def test_an_integer_for_a_float_setting_becomes_a_float() -> None:
    cfg = LayerFinetune(lr=1).cfg
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_a_diverging_fit_is_refused(problem: EditProblem) -> None:
    with pytest.raises(RuntimeError, match=r"projected_adam: the fit diverged \(the loss is nan at step \d+\)"):
        ProjectedAdam(lr=1e37, steps=50).run(problem)
    strat = LayerFinetune(steps=1)
    strat.setup(problem)
    with torch.no_grad():
        strat.w[0, 0, 0, 0] = float("inf")  # a finite loss so far, a non-finite result
    with pytest.raises(RuntimeError, match=r"layer_finetune: the fit diverged \(NaN/Inf in main.4.weight\)"):
        strat.checked_result()
