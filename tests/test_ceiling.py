"""The paste ceiling equals a direct computation: the layer's value replaced by v* (target) or by the copied
features pasted at each held-out region, scored like the edit."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rewrite.core.erase import generate_with_value
from rewrite.core.problem import on_grid, paste, paste_offset
from rewrite.eval.ceiling import ceiling_values, paste_ceiling, values_replaced
from rewrite.eval.evaluate import Evaluator
from rewrite.eval.rule_metrics import goal_image_scores, to01
from tests.conftest import tiny_problem

pytestmark = pytest.mark.usefixtures("one_thread")

REQUEST = {"name": "box", "copy": {"seed": 1, "box": [4, 4, 10, 8]}, "paste": {"seed": 2, "box": [6, 8, 12, 12]},
           "heldout": [{"seed": 3, "box": [0, 0, 6, 4]}, {"seed": 4, "box": [8, 10, 14, 14]},
                       {"seed": 5, "box": [0, 0, 8, 8]}]}  # the last has another size: no paste there


TOL = 0.01  # the untrained tiny generator's images differ by a few hundredths


def evaluator_for(problem):
    return lambda request: [Evaluator(dataclasses.replace(problem, request=request), None, tol=TOL)]


@torch.no_grad()
def test_ceiling_equals_a_direct_computation() -> None:
    p = tiny_problem(request=REQUEST)
    site, adapter, size = p.site, p.site.adapter, p.size
    # direct: the target drawn with v*, scored against the pasted RGB goal
    target = generate_with_value(site, p.z_target, p.target_value)
    reached, kept = goal_image_scores(to01(adapter.generate(p.z_target)), to01(target), to01(p.target_image), TOL)
    efficacy = float(reached[0] * kept[0])
    # direct: each same-size held-out region gets the copied features, scored against the same paste in RGB
    src_value, src_img = site.capture(p.z_source).value, adapter.generate(p.z_source)
    copy_mask, gen = p.request.copy.mask(size), []
    for r in p.request.heldout:
        offset = paste_offset(p.request.copy, r, size)
        if offset is None:
            continue
        z = adapter.sample_z([r.seed])
        value, _ = paste(src_value, site.capture(z).value, copy_mask, offset, size)
        before = adapter.generate(z)
        goal, _ = paste(src_img, before, copy_mask, offset, size)
        reached, kept = goal_image_scores(to01(before), to01(generate_with_value(site, z, value)), to01(goal),
                                           TOL)
        gen.append(float(reached[0] * kept[0]))
    m = paste_ceiling(p, evaluator_for(p))
    assert m["n_ceiling_heldout"] == len(gen) == 2
    assert m["ceiling_efficacy"] == pytest.approx(efficacy, abs=1e-6)
    assert m["ceiling_generality"] == pytest.approx(sum(gen) / len(gen), abs=1e-6)
    assert m["ceiling_efficacy"] > 0.1 and m["ceiling_generality"] > 0.1  # not an agreement between zeros


@torch.no_grad()
def test_the_replacement_touches_only_the_marked_rows_and_ends_with_the_context() -> None:
    p = tiny_problem(request=REQUEST)
    adapter = p.site.adapter
    values, request = ceiling_values(p)
    assert sorted(values) == [2, 3, 4] and [r.seed for r in request.heldout] == [3, 4]
    z = adapter.sample_z([2, 7, 3])
    plain = adapter.generate(z)
    with values_replaced(p.site, values):
        swapped = adapter.generate(z)
    torch.testing.assert_close(swapped[1], plain[1])  # seed 7 has no pasted value
    assert not torch.allclose(swapped[0], plain[0]) and not torch.allclose(swapped[2], plain[2])
    torch.testing.assert_close(swapped[:1], generate_with_value(p.site, p.z_target, p.target_value))
    torch.testing.assert_close(adapter.generate(z), plain)  # hooks removed


def test_no_pasteable_heldout_region_gives_efficacy_only() -> None:
    p = tiny_problem(request={**REQUEST, "heldout": [{"seed": 5, "box": [0, 0, 8, 8]}]})
    m = paste_ceiling(p, evaluator_for(p))
    assert m["n_ceiling_heldout"] == 0 and m["ceiling_generality"] != m["ceiling_generality"]  # NaN
    assert 0 <= m["ceiling_efficacy"] <= 1


def test_a_multirun_computes_a_ceiling_once_per_weights_and_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra import compose, initialize_config_dir

    from rewrite import pipeline

    with initialize_config_dir(pipeline.CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["generator=tiny", "edit=tiny_box"])
    p = tiny_problem(request=REQUEST)
    calls = []
    real = pipeline.paste_ceiling
    monkeypatch.setattr(pipeline, "paste_ceiling", lambda *a: calls.append(1) or real(*a))
    pipeline.CEILINGS.clear()
    first = pipeline.ceiling_metrics(cfg, p.site.adapter, p, "sha-a")
    assert pipeline.ceiling_metrics(cfg, p.site.adapter, p, "sha-a") == first and len(calls) == 1
    pipeline.ceiling_metrics(cfg, p.site.adapter, p, "sha-b")  # other weights: computed again
    moved = dataclasses.replace(p, request=dataclasses.replace(p.request, heldout=p.request.heldout[:1]))
    pipeline.ceiling_metrics(cfg, p.site.adapter, moved, "sha-a")  # another request: computed again
    pipeline.ceiling_metrics(cfg, p.site.adapter, p, None)  # no hash: never kept
    assert len(calls) == 4


def test_on_grid_offsets() -> None:
    assert on_grid((2, -4), 16, 8, 8) and on_grid((4, 0), 64, 16, 16)
    assert not on_grid((1, 0), 16, 8, 8) and not on_grid((0, 2), 64, 16, 16) and not on_grid((2, 2), 64, 16, 16)


@torch.no_grad()
def test_a_heldout_region_off_the_feature_grid_takes_no_paste() -> None:
    """A held-out region of the copy's size, 1 px off the value's 2 px cells, would get the copy half a cell
    away from where a rule draws the part: the ceiling leaves it out, as it does a region of another size."""
    off = {"seed": 6, "box": [1, 0, 7, 4]}  # the copy's size, offset (-3, -4) px
    p = tiny_problem(request={**REQUEST, "heldout": [*REQUEST["heldout"], off]})
    values, request = ceiling_values(p)
    assert sorted(values) == [2, 3, 4] and [r.seed for r in request.heldout] == [3, 4]
    assert paste_offset(p.request.copy, p.request.heldout[-1], p.size) == (-3, -4)  # it has the copy's size
