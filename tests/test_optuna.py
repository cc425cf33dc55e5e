"""Optuna search (hydra/sweeper=optuna_tpe): the grid experiments' spaces, real tiny studies through
`python -m rewrite -m`, what Optuna was told per trial, and a NaN edit_score that must not end a study."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rewrite.bench.optuna_search import RESULTS, grid_size, optuna_overrides, read_study, search_space
from rewrite.bench.sweep_table import load_sweep
from rewrite.pipeline import CONF_DIR
from rewrite.runner.runfolder import read_run
from tests.test_run import ROOT

EXPERIMENTS = sorted((Path(CONF_DIR) / "experiment").glob("search_*.yaml"))
# The tiny generator's scores: eval.tol=0.02 gives different, non-zero edit_scores to closed_form and rank_one;
# eval.tol=0.05 leaves no held-out pixel to score, so edit_score is NaN (a real NaN, not a stand-in).
TINY = ["generator=tiny", "edit=tiny_box", "stats.num_samples=32", "stats.batch_size=16", "progress=false",
        "logger=none", "eval.perceptual=null", "eval.ceiling=false"]
SPACE = ["strategy=closed_form,rank_one", "eval.tol=0.02,0.05"]  # command-line lists: Optuna choices too

# Runs `python -m rewrite` with Optuna's Study.tell wrapped: every (trial number, state, values) told is
# appended as a JSON line to the file named by $TOLD, so the test sees exactly the objective Optuna received.
DRIVER = """
import json, os, sys
import optuna
tell = optuna.study.Study.tell
def logged(self, trial, values=None, state=None, **kw):
    out = tell(self, trial, values=values, state=state, **kw)
    with open(os.environ["TOLD"], "a") as f:
        f.write(json.dumps({"number": trial.number, "state": str(state), "values": values}) + "\\n")
    return out
optuna.study.Study.tell = logged
from rewrite.cli import main
sys.argv = ["rewrite", *sys.argv[1:]]
main()
"""


def _study(tmp_path: Path, name: str, trials: int, seed: int = 0) -> tuple[Path, list[dict]]:
    """A real Optuna multirun of the tiny generator over SPACE; its sweep folder and what Optuna was told."""
    sweep, told = tmp_path / name, tmp_path / f"{name}.told.jsonl"
    args = ["-m", *TINY, "hydra/sweeper=optuna_tpe", f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.sampler.seed={seed}", *SPACE, f"hydra.sweep.dir={sweep}",
            f"stats.cache_dir={tmp_path}/cache"]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT), "TOLD": str(told), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", DRIVER, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep, [json.loads(line) for line in told.read_text().splitlines()]


def _jobs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_", 1)[0]))


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_every_grid_experiment_is_an_optuna_space_of_the_same_settings(experiment: Path) -> None:
    """hydra/sweeper=optuna_tpe composes with each grid experiment and reads its params as they are: each
    list a categorical choice of the grid's values, so a study searches the grid's space and nothing else."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import CategoricalDistribution

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={experiment.stem}",
                                           *optuna_overrides(experiment, trials=5, seed=3)], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert "OptunaSweeper" in sweeper._target_ and sweeper.direction == "maximize" and sweeper.storage is None
    assert sweeper.n_trials == 5 and sweeper.sampler.seed == 3 and "TPESampler" in sweeper.sampler._target_
    params = OmegaConf.to_container(sweeper.params)
    distributions, fixed = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    space = search_space(experiment)
    assert set(distributions) | set(fixed) == set(space)
    for key, dist in distributions.items():
        assert isinstance(dist, CategoricalDistribution)
        assert sorted(map(float if key.endswith(("lr", "weight")) else str, dist.choices)) == \
            sorted(map(float if key.endswith(("lr", "weight")) else str, space[key]))
    assert all(space[k] == [str(v)] for k, v in fixed.items())
    assert math.prod(len(d.choices) for d in distributions.values()) == grid_size(experiment)


def test_the_grid_size_is_what_the_basic_sweeper_runs() -> None:
    """grid_size is the job count of the grid multirun (Hydra's own expansion of the same params)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    rank_one = Path(CONF_DIR) / "experiment" / "search_toy_rank_one.yaml"
    params = OmegaConf.load(rank_one).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    assert grid_size(rank_one) == sum(len(b) for b in batches) == 8


def test_overrides_refuse_what_is_not_a_search(tmp_path: Path) -> None:
    rank_one = Path(CONF_DIR) / "experiment" / "search_toy_rank_one.yaml"
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="trials"):
            optuna_overrides(rank_one, bad)  # type: ignore[arg-type]
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("hydra:\n  sweeper:\n    params:\n      strategy.lr: 1e-3\n")
    with pytest.raises(ValueError, match="nothing to search"):
        optuna_overrides(fixed, 4)
    none = tmp_path / "none.yaml"
    none.write_text("seed: 1\n")
    with pytest.raises(ValueError, match="no hydra.sweeper.params"):
        optuna_overrides(none, 4)
    interval = tmp_path / "interval.yaml"
    interval.write_text("hydra:\n  sweeper:\n    params:\n      strategy.lr: interval(1e-4,1e-2)\n")
    with pytest.raises(ValueError, match="continuous range"):
        grid_size(interval)
    with pytest.raises(FileNotFoundError):
        optuna_overrides(tmp_path / "missing.yaml", 4)


def test_a_real_study_told_optuna_each_jobs_edit_score_and_is_read_like_a_grid(tmp_path: Path) -> None:
    """Five trials of a real tiny study: five complete job folders (sweep_table rows), each trial's objective
    is that job's edit_score, a NaN edit_score is a failed trial that does not end the study, and Optuna's
    best_value / best_params are the best job's. The same seed proposes the same trials again."""
    trials = 5
    sweep, told = _study(tmp_path, "a", trials)
    jobs = _jobs(sweep)
    assert len(jobs) == trials and (sweep / RESULTS).is_file()
    metrics = []
    for job in jobs:
        overrides, m = read_run(job)  # raises for an incomplete or stale job folder
        assert overrides is not None
        metrics.append(m)
    assert [t["number"] for t in told] == list(range(trials))
    nan_jobs = 0
    for t, m in zip(told, metrics, strict=True):
        if math.isnan(m["edit_score"]):
            nan_jobs += 1
            assert t["state"] == "TrialState.FAIL" and t["values"] is None
        else:
            assert t["state"] == "TrialState.COMPLETE" and t["values"] == [m["edit_score"]]
    assert 0 < nan_jobs < trials, "the seed should give both a NaN and a scored trial (pick another seed)"
    table = load_sweep(sweep)
    assert len(table.rows) == trials and not table.skipped
    for row, m in zip(table.rows, metrics, strict=True):  # rows in job order, each its job's score
        assert row["edit_score"] == m["edit_score"] or math.isnan(row["edit_score"]) and math.isnan(m["edit_score"])
    study = read_study(sweep)
    scored = [(m["edit_score"], r) for m, r in zip(metrics, table.rows, strict=True) if not math.isnan(m["edit_score"])]
    best, best_row = max(scored, key=lambda x: x[0])
    assert study["best_value"] == best
    assert {k: str(v) for k, v in study["best_params"].items()} == {k: str(best_row[k]) for k in study["best_params"]}
    assert len({(r["strategy"], r["eval.tol"]) for r in table.rows}) > 1  # Optuna did search: not one setting

    again, _ = _study(tmp_path, "b", trials)
    assert [p.name for p in _jobs(again)] == [p.name for p in jobs]  # job folders are named by their overrides
