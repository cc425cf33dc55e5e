"""Launchers: jobs side by side share the cores (never more torch threads than cores), on real multiruns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rewrite.pipeline import CONF_DIR
from rewrite.runner.threads import jobs_side_by_side, threads_per_job
from tests.test_run import TINY, rewrite_cli

JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
LOCAL = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}
SLURM = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
BASIC = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}


@pytest.mark.parametrize(("launcher", "cores", "threads"), [
    ({**JOBLIB, "n_jobs": -1}, 16, 1),  # one job per core
    ({**JOBLIB, "n_jobs": 4}, 16, 4),
    ({**JOBLIB, "n_jobs": 3}, 16, 5),
    ({**JOBLIB, "n_jobs": 32}, 16, 1),  # more jobs than cores: still one thread each, joblib queues the rest
    ({**JOBLIB, "n_jobs": 1}, 16, None),  # one job at a time: torch's default
    (LOCAL, 2, 1),  # submitit_local starts every job at once: one thread each unless cpus_per_task says more
    ({**LOCAL, "cpus_per_task": 2}, 2, 2),
    ({**SLURM, "cpus_per_task": 6}, 2, 6),  # a SLURM job's cores are its own
    (BASIC, 16, None),
    (None, 16, None),  # outside Hydra
])
def test_threads_per_job_never_oversubscribe(launcher: dict | None, cores: int, threads: int | None) -> None:
    got = threads_per_job(launcher, cores=cores)
    assert got == threads
    if launcher is not None and got is not None and "submitit" not in launcher["_target_"]:
        assert got * min(jobs_side_by_side(launcher, cores), cores) <= cores


def test_an_explicit_torch_threads_wins() -> None:
    assert threads_per_job({**JOBLIB, "n_jobs": -1}, requested=3, cores=16) == 3


@pytest.mark.parametrize("name", ["cores", "slurm"])
def test_packaged_launcher_configs_compose(name: str) -> None:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert ("Joblib" if name == "cores" else "Slurm") in launcher._target_
    if name == "slurm":
        assert {"partition", "timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb"} <= set(launcher)


def _job_metrics(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]


def test_joblib_multirun_shares_the_cores(tmp_path: Path) -> None:
    """Two jobs side by side on a 2-job joblib launcher: each finishes, with cores // 2 threads (at least 1)."""
    proc = rewrite_cli(["-m", *TINY, "strategy=closed_form,rank_one", "logger=none", "hydra/launcher=cores",
                        "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path}/sweep",
                        f"stats.cache_dir={tmp_path}/cache"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = _job_metrics(tmp_path / "sweep")
    assert sorted(m["strategy"] for m in metrics) == ["closed_form", "rank_one"]
    assert {m["torch_threads"] for m in metrics} == {max(1, (os.cpu_count() or 1) // 2)}


@pytest.mark.slow
def test_submitit_local_multirun(tmp_path: Path) -> None:
    """The launcher a cluster uses, run locally: two jobs as submitit subprocesses, both complete."""
    proc = rewrite_cli(["-m", *TINY, "strategy=closed_form,rank_one", "logger=none", "hydra/launcher=submitit_local",
                        "hydra.launcher.timeout_min=10",
                        f"hydra.sweep.dir={tmp_path}/sweep", f"stats.cache_dir={tmp_path}/cache"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = _job_metrics(tmp_path / "sweep")
    assert sorted(m["strategy"] for m in metrics) == ["closed_form", "rank_one"]
    assert all(m["torch_threads"] == 1 for m in metrics)  # cpus_per_task unset: one thread per job
