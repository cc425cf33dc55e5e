"""Longer end-to-end runs (marked slow; CI runs them): the full five-strategy multirun, the face model."""

from __future__ import annotations

import json
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
        assert (job / "grid.png").is_file() and (job / "delta.safetensors").is_file()
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1
