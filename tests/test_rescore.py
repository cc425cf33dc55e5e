"""Rescoring a finished run from what it saved reproduces the scores the run itself wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rewrite.bench.rescore import main as rescore_main
from rewrite.cli import run
from rewrite.pipeline import CONF_DIR


def test_rescore_reproduces_the_runs_own_metrics(tmp_path: Path) -> None:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[
            "generator=tiny", "edit=tiny_box", "strategy=rank_one", "logger=none", "progress=false",
            "stats.num_samples=32", "stats.batch_size=16", "eval.tol=0.005", "eval.perceptual=null",
            f"stats.cache_dir={tmp_path / 'cache'}", f"+output_dir={tmp_path / 'run'}"])
    written = run(cfg)
    path = tmp_path / "run" / "metrics.json"
    path.write_text(json.dumps({"edit_time_s": 1.5, "strategy": "rank_one", "generality": -1.0}))
    rescore_main([str(tmp_path)])
    again = json.loads(path.read_text())
    assert again["edit_time_s"] == 1.5 and again["strategy"] == "rank_one"  # the edit's own figures are kept
    for key in ("efficacy", "generality", "specificity", "edit_score", "key_selectivity", "value_loss"):
        assert again[key] == pytest.approx(written[key], rel=1e-6, abs=1e-9), key


def test_rescore_needs_finished_runs(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no finished runs"):
        rescore_main([str(tmp_path)])
