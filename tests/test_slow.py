"""Longer end-to-end runs (marked slow; CI runs them): the full five-strategy multirun, the face model, the
installed wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_run import TINY, rewrite_cli

pytestmark = pytest.mark.slow

ALL = "strategy=closed_form,rank_one,projected_adam,layer_finetune,full_finetune"


def test_five_strategy_multirun_with_default_settings(tmp_path: Path) -> None:
    proc = rewrite_cli(["-m", *TINY, ALL, "logger=csv", f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("*/metrics.json"))]
    assert sorted(m["strategy"] for m in metrics) == sorted(ALL.split("=")[1].split(","))
    for m in metrics:
        if m["strategy"] != "full_finetune":  # full fine-tuning optimises the image, not the value
            assert m["value_loss"] < m["value_loss_before"], m["strategy"]


def test_face_model_default_edit(tmp_path: Path) -> None:
    proc = rewrite_cli(["-m", "strategy=closed_form,rank_one", "logger=wandb", "progress=false",
                        f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent for p in (tmp_path / "sweep").glob("*/metrics.json"))
    assert len(jobs) == 2
    for job in jobs:
        m = json.loads((job / "metrics.json").read_text())
        assert m["value_loss"] < m["value_loss_before"]
        assert (job / "grid.png").is_file() and (job / "edit.safetensors").is_file()
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1


def test_the_wheel_runs_from_outside_the_checkout(tmp_path: Path) -> None:
    """`pip install .` (not editable) carries the configs and the committed weights: built as a wheel,
    installed into a folder of its own, it runs the toy generator from an unrelated folder."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "-q", "-w", str(tmp_path / "whl")],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "whl").glob("rewrite-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "disabled"}
    where = subprocess.run([sys.executable, "-c", "import rewrite.pipeline as r; print(r.__file__); print(r.CONF_DIR)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(p.startswith(str(target)) for p in where), where  # the installed copy, not the checkout
    proc = subprocess.run([sys.executable, "-m", "rewrite", "generator=toy_stylegan2", "edit=toy_dome_to_spire",
                           "logger=none", "progress=false", "stats.num_samples=16", "stats.batch_size=16",
                           "eval.scorers.toy_ideal.untouched=2", f"stats.cache_dir={tmp_path / 'cache'}",
                           f"hydra.run.dir={elsewhere / 'run'}"], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((elsewhere / "run" / "metrics.json").read_text())
    assert metrics["score_source"] == "toy_ideal" and metrics["n_heldout"] == 32
    # the wheel's console script for edit files works too
    show = subprocess.run([str(target / "bin" / "rewrite-edit"), "show", str(elsewhere / "run" / "edit.safetensors")],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert show.returncode == 0, show.stderr[-3000:]
    assert json.loads(show.stdout)["layer"] == "convs.4.conv.weight"  # the tuned toy layer


def test_benchmark_end_to_end_on_two_strategies(tmp_path: Path) -> None:
    """Validation grids, the choice, the test runs as one multirun, the table; a second call reuses everything."""
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "rewrite.bench.benchmark", "toy_add_tree", "--out", str(out),
           "--strategies", "closed_form,rank_one", "--fid-samples", "4"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    chosen = json.loads((out / "chosen.json").read_text())
    for i, name in enumerate(["closed_form", "rank_one"]):
        m = json.loads((out / "test" / f"{i}_{name}" / "metrics.json").read_text())
        assert m["strategy"] == name and m["split"] == "test" and m["fid_samples"] == 4
        assert f"+bench_test={i}_{name}" in m["hydra_overrides"]
        config = (out / "test" / f"{i}_{name}" / "config.yaml").read_text()
        assert f"layer: {chosen[name]['overrides']['generator.layer']}" in config
    assert "shared_work_reused" in m and m["shared_work_reused"] != "none"  # the second test job reused work
    assert (out / "table.md").read_text().count("\n| `") == 2
    lines = len((out / "commands.txt").read_text().splitlines())
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len((out / "commands.txt").read_text().splitlines()) == lines  # nothing ran again
