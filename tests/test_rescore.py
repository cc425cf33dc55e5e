"""Rescoring a finished run from what it saved reproduces the scores the run itself wrote."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rewrite.bench.rescore import RequestMismatch, UnsafeRunConfig, check_folder, check_targets, package_targets
from rewrite.bench.rescore import main as rescore_main
from rewrite.cli import run
from rewrite.editfile.artifact import EditArtifact
from rewrite.pipeline import CONF_DIR, resolved
from rewrite.runner.outputs import EDIT_FILE
from rewrite.runner.runfolder import HISTORY_DIR, RUN_OVERRIDES


def test_rescore_reproduces_the_runs_own_metrics(tmp_path: Path) -> None:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[
            "generator=tiny", "edit=tiny_box", "strategy=rank_one", "logger=none", "progress=false",
            "stats.num_samples=32", "stats.batch_size=16", "eval.tol=0.005", "eval.perceptual=null",
            f"stats.cache_dir={tmp_path / 'cache'}", f"+output_dir={tmp_path / 'run'}"])
    written = run(cfg)
    path = tmp_path / "run" / "metrics.json"
    assert json.loads(path.read_text())[RUN_OVERRIDES] is None  # a run outside Hydra has no overrides
    old = json.dumps({"edit_time_s": 1.5, "strategy": "rank_one", "generality": -1.0, RUN_OVERRIDES: None})
    path.write_text(old)
    rescore_main([str(tmp_path)])
    again = json.loads(path.read_text())
    assert again["edit_time_s"] == 1.5 and again["strategy"] == "rank_one"  # the edit's own figures are kept
    assert RUN_OVERRIDES in again and again[RUN_OVERRIDES] is None
    for key in ("efficacy", "generality", "specificity", "edit_score", "key_selectivity", "value_loss"):
        assert again[key] == pytest.approx(written[key], rel=1e-6, abs=1e-9), key
    # Every rescore keeps the metrics it replaces, oldest first.
    rescore_main([str(tmp_path / "run")])
    history = tmp_path / "run" / HISTORY_DIR
    assert sorted(p.name for p in history.iterdir()) == ["001.json", "002.json"]
    assert (history / "001.json").read_text() == old
    assert json.loads((history / "002.json").read_text()) == again


def test_an_older_edit_file_is_compared_with_the_edit_config(tmp_path: Path) -> None:
    """Edit files written before they recorded the request used hold the resolved `edit` config."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[
            "generator=tiny", "edit=tiny_box", "strategy=closed_form", "logger=none", "progress=false",
            "stats.num_samples=32", "stats.batch_size=16", "eval.perceptual=null",
            f"stats.cache_dir={tmp_path / 'cache'}", f"+output_dir={tmp_path / 'run'}"])
    run(cfg)
    folder = tmp_path / "run"
    art = EditArtifact.load(folder / EDIT_FILE)
    dataclasses.replace(art, request=resolved(cfg.edit)).save(folder / EDIT_FILE)
    assert check_folder(folder).art.request["file"] is None  # the old form, accepted
    saved = OmegaConf.load(folder / "config.yaml")
    saved.edit.heldout[0].seed = 99
    OmegaConf.save(saved, folder / "config.yaml")
    with pytest.raises(RequestMismatch, match=r"\(they differ in heldout\)"):
        check_folder(folder)


def test_only_the_packages_own_targets_or_allowed_prefixes_are_built(tmp_path: Path) -> None:
    assert {"rewrite.generators.tiny.load_tiny", "pytorch_lightning.Trainer",
            "rewrite.toyworld.requests.edits.toy_request"} <= package_targets()
    cfg = OmegaConf.create({"generator": {"model": {"_target_": "my_models.load", "size": 8}},
                            "logger": {"_target_": None}, "eval": {"scorers": {"x": [{"_target_": "my_models.s"}]}}})
    check_targets(cfg, tmp_path / "config.yaml", ["my_models."])  # the user's own package, allowed by the flag
    with pytest.raises(UnsafeRunConfig, match=r"generator.model._target_ names 'my_models.load'"):
        check_targets(cfg, tmp_path / "config.yaml", ["my_model."])
    cfg.generator.model._target_ = 3
    with pytest.raises(UnsafeRunConfig, match="names 3, which is not one of the package's own targets"):
        check_targets(cfg, tmp_path / "config.yaml", ["my_models."])


def test_rescore_needs_finished_runs(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no finished runs"):
        rescore_main([str(tmp_path)])
