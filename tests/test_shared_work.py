"""Strategy-independent work shared by the jobs of a multirun: same numbers as separate runs, never stale."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rewrite.core.shared import SharedStore, key_of
from rewrite.pipeline import CONF_DIR, PROBLEMS, build_edit
from tests.test_run import TINY, rewrite_cli

NOT_COMPARED = {"edit_time_s", "stats_time_s", "stats_cached", "shared_work_reused", "hydra_overrides",
                "torch_threads"}


def _numbers(path: Path) -> dict:
    m = json.loads(path.read_text())
    return {k: v for k, v in m.items() if k not in NOT_COMPARED}


def test_a_multirun_reuses_the_shared_work_and_gets_the_numbers_of_separate_runs(tmp_path: Path) -> None:
    # both strategies have `steps`: a short fine-tune
    common = [*TINY, "logger=none", f"stats.cache_dir={tmp_path}/cache", "strategy.steps=20"]
    proc = rewrite_cli(["-m", *common, "strategy=rank_one,full_finetune",
                        f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folders = sorted((tmp_path / "sweep").glob("*/metrics.json"), key=lambda p: int(p.parent.name.split("_")[0]))
    jobs = [json.loads(p.read_text()) for p in folders]
    assert [m["strategy"] for m in jobs] == ["rank_one", "full_finetune"]
    assert jobs[0]["shared_work_reused"] == "none"
    assert {"problems", "evaluators", "ceilings"} <= set(jobs[1]["shared_work_reused"].split(","))
    # the job that reused, run on its own (full_finetune trains every weight: the most a reused problem could leak)
    proc = rewrite_cli([*common, "strategy=full_finetune", f"hydra.run.dir={tmp_path}/alone"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "alone" / "metrics.json").read_text())["shared_work_reused"] == "none"
    assert _numbers(folders[1]) == _numbers(tmp_path / "alone" / "metrics.json")


def _cfg(tmp_path: Path, *overrides: str):  # noqa: ANN202
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[*TINY, f"stats.cache_dir={tmp_path}/cache", *overrides])


def test_the_shared_problem_is_keyed_by_weights_layer_and_request(tmp_path: Path) -> None:
    PROBLEMS.clear()
    _, _, _, first = build_edit(_cfg(tmp_path))
    adapter, _, _, again = build_edit(_cfg(tmp_path))
    assert (PROBLEMS.hits, PROBLEMS.misses) == (1, 1)
    assert again.site.adapter is adapter and first.site.adapter is not adapter  # bound to this job's model
    for f in dataclasses.fields(first):
        a, b = getattr(first, f.name), getattr(again, f.name)
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), f.name
    for changed in (["generator.model.seed=1"],  # other weights
                    ["edit.paste.box=[2,2,8,6]"],  # another request
                    ["generator.layer=main.7", "generator.value_at=null"]):  # another layer
        misses = PROBLEMS.misses
        _, _, _, other = build_edit(_cfg(tmp_path, *changed))
        assert PROBLEMS.misses == misses + 1, changed
        assert not torch.equal(other.target_value, first.target_value) or other.request != first.request


def test_an_evaluator_refuses_to_score_another_request(tmp_path: Path) -> None:
    from rewrite.eval.evaluate import Evaluator

    _, _, _, p = build_edit(_cfg(tmp_path))
    _, _, _, other = build_edit(_cfg(tmp_path, "edit.paste.box=[2,2,8,6]"))
    evaluator = Evaluator(p, None)
    assert evaluator.for_problem(dataclasses.replace(p)).problem is not p
    with pytest.raises(ValueError, match="only the request"):
        evaluator.for_problem(other)


def test_store_is_bounded_and_stores_nothing_on_an_error() -> None:
    s = SharedStore("t", 2)
    for k in "abc":
        assert s.get(key_of(k), lambda k=k: k.upper()) == k.upper()
    assert list(s.entries) == [key_of("b"), key_of("c")]  # the least recently used went first

    def boom() -> str:
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        s.get(key_of("d"), boom)
    assert key_of("d") not in s.entries and s.misses == 3
    assert s.get(key_of("b"), boom) == "B" and s.hits == 1
