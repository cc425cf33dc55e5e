"""rewrite.bench.sweep_table on hand-made job folders (the real multirun is read back in test_run)."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path

import pytest

from rewrite.bench.pareto import marker_sizes, pareto_front, short_label
from rewrite.bench.sweep_table import (
    DEFAULT_METRICS,
    RUN_OVERRIDES,
    _interval,
    default_metrics,
    group_jobs,
    load_sweep,
    main,
    table,
)


def _job(root: Path, name: str, overrides: list[str], metrics: dict | None) -> None:
    """A job folder as a finished run leaves it: its overrides, and metrics.json recording them."""
    (root / name / ".hydra").mkdir(parents=True)
    (root / name / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (root / name / "metrics.json").write_text(json.dumps({**metrics, RUN_OVERRIDES: overrides}))


def test_rows_columns_and_unfinished_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          caplog: pytest.LogCaptureFixture) -> None:
    for i in range(11):  # job 10 must come after job 9, not after job 1
        _job(tmp_path, f"{i}_lr={i}", ["logger=csv", f"strategy.lr={i}"], {"value_loss": i / 10, "strategy": "x"})
    _job(tmp_path, "11_lr=11", ["logger=csv", "strategy.lr=11"], None)
    sweep = load_sweep(tmp_path)
    assert [r["strategy.lr"] for r in sweep.rows] == [str(i) for i in range(11)]
    assert sweep.skipped == {"11_lr=11": "no metrics.json: failed, killed or still running"}
    assert RUN_OVERRIDES not in sweep.rows[0]  # the record is not a column
    header, cells = table(sweep, ["value_loss", "not_a_metric"])
    assert header == ["strategy.lr", "value_loss"]  # logger and strategy never vary: not columns
    assert cells[10] == ["10", "1"]
    with caplog.at_level(logging.WARNING):
        main([str(tmp_path), "--metrics", "value_loss", "--csv", str(tmp_path / "t.csv")])
    assert "| 3 | 0.3 |" in capsys.readouterr().out
    assert "skipped 1 incomplete job folder(s): 11_lr=11 (no metrics.json" in caplog.text
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [float(r["value_loss"]) for r in rows] == [i / 10 for i in range(11)]


def test_only_complete_fresh_job_folders_are_rows(tmp_path: Path) -> None:
    """A folder is a row only when its metrics.json is there, readable, and written for its current overrides;
    folders from before the overrides record need their last file, config.yaml."""
    _job(tmp_path, "0_ok", ["strategy.lr=1"], {"value_loss": 0.5})
    _job(tmp_path, "1_stale", ["strategy.lr=2"], {"value_loss": 0.25})
    (tmp_path / "1_stale" / ".hydra" / "overrides.yaml").write_text("- strategy.lr=3\n")  # a re-run that failed
    _job(tmp_path, "2_truncated", ["strategy.lr=4"], {"value_loss": 0.1})
    (tmp_path / "2_truncated" / "metrics.json").write_text('{"value_loss": 0.')
    _job(tmp_path, "3_list", ["strategy.lr=5"], {})
    (tmp_path / "3_list" / "metrics.json").write_text("[0.5]")
    _job(tmp_path, "4_old_killed", ["strategy.lr=6"], {})
    (tmp_path / "4_old_killed" / "metrics.json").write_text('{"value_loss": 0.3}')  # no record, no config.yaml
    _job(tmp_path, "5_old_done", ["strategy.lr=7"], {})
    (tmp_path / "5_old_done" / "metrics.json").write_text('{"value_loss": 0.7}')
    (tmp_path / "5_old_done" / "config.yaml").write_text("seed: 0\n")
    _job(tmp_path, "6_bad_overrides", ["strategy.lr=8"], {"value_loss": 0.8})
    (tmp_path / "6_bad_overrides" / ".hydra" / "overrides.yaml").write_text("a: [\n")
    sweep = load_sweep(tmp_path)
    assert [r["strategy.lr"] for r in sweep.rows] == ["1", "7"]
    why = sweep.skipped
    assert list(why) == ["1_stale", "2_truncated", "3_list", "4_old_killed", "6_bad_overrides"]
    assert why["1_stale"].startswith("stale: metrics.json was written for overrides ['strategy.lr=2'], but "
                                     ".hydra/overrides.yaml says ['strategy.lr=3']")
    assert why["2_truncated"].startswith("unreadable metrics.json (")
    assert why["3_list"] == "metrics.json holds a JSON list, not an object of metrics"
    assert why["4_old_killed"] == "metrics.json without config.yaml: killed while writing its files"
    assert why["6_bad_overrides"].startswith("unreadable .hydra/overrides.yaml (")


def test_csv_and_pareto_names_are_checked_before_the_table_is_printed(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _headline_sweep(tmp_path / "sweep")
    (tmp_path / "a_file").write_text("x")
    for flag, name, message in (("--csv", "missing/t.csv", "folder " + str(tmp_path / "missing") + " does not exist"),
                                ("--csv", "a_file/t.csv", "a_file is a file, not a folder"),
                                ("--csv", "sweep", "is a folder; name a file"),
                                ("--pareto", "missing/p.png", "does not exist")):
        with pytest.raises(SystemExit, match=re.escape(message)):
            main([str(tmp_path / "sweep"), flag, str(tmp_path / name)])
        assert capsys.readouterr().out == ""  # nothing printed
    assert not (tmp_path / "missing").exists()


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sweep(tmp_path / "nope")
    with pytest.raises(ValueError, match="no Hydra job folders"):
        load_sweep(tmp_path)


def _headline(strategy: str, gen: float, spec: float, seconds: float, half: float = 0.05) -> dict:
    """metrics.json with the headline metrics, each with a symmetric 95% interval of half-width `half`."""
    m: dict[str, object] = {"strategy": strategy, "n_heldout": 8, "edit_time_s": seconds}
    for name, v in {"efficacy": gen - 0.1, "generality": gen, "specificity": spec,
                    "edit_score": round((gen * spec) ** 0.5, 4)}.items():
        m |= {name: v, f"{name}_ci_low": round(v - half, 4), f"{name}_ci_high": round(v + half, 4)}
    return m


def _headline_sweep(root: Path) -> None:
    """Three strategies x two held-out slices; the last job never finished."""
    jobs = [("rank_one", 0, 0.62, 0.90, 0.6), ("rank_one", 8, 0.58, 0.92, 0.7),
            ("closed_form", 0, 0.30, 0.97, 0.02), ("closed_form", 8, 0.34, 0.95, 0.017),
            ("layer_finetune", 0, 0.80, 0.60, 5.2), ("layer_finetune", 8, None, None, None)]
    for i, (s, start, gen, spec, t) in enumerate(jobs):
        _job(root, f"{i}_edit.heldout_start={start},strategy={s}", [f"strategy={s}", f"edit.heldout_start={start}"],
             None if gen is None else _headline(s, gen, spec, t))


def test_intervals_print_as_one_cell_and_stay_three_csv_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    _headline_sweep(tmp_path)
    sweep = load_sweep(tmp_path)
    assert default_metrics(sweep) == ["efficacy", "generality", "specificity", "edit_score", "edit_time_s"]
    header, cells = table(sweep, default_metrics(sweep))
    assert header == ["strategy", "edit.heldout_start", "efficacy", "generality", "specificity", "edit_score",
                      "edit_time_s"]  # n_heldout is not asked for; the _ci_ keys live inside their metric's cell
    assert cells[0] == ["rank_one", "0", "0.52 [0.47, 0.57]", "0.62 [0.57, 0.67]", "0.90 [0.85, 0.95]",
                        "0.75 [0.70, 0.80]", "0.6"]
    with caplog.at_level(logging.WARNING):
        main([str(tmp_path), "--csv", str(tmp_path / "t.csv")])  # no --metrics: the headline set
    out = capsys.readouterr().out
    assert "| closed_form | 8 | 0.24 [0.19, 0.29] | 0.34 [0.29, 0.39] |" in out and "95% interval" in out
    assert "skipped 1 incomplete job folder(s): 5_edit.heldout_start=8,strategy=layer_finetune (no" in caplog.text
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert list(rows[0]) == ["strategy", "edit.heldout_start"] + [
        f"{m}{s}" for m in ("efficacy", "generality", "specificity", "edit_score") for s in ("", "_ci_low", "_ci_high")
    ] + ["edit_time_s"]
    assert [float(r["generality_ci_low"]) for r in rows] == [0.57, 0.53, 0.25, 0.29, 0.75]
    # A job without intervals prints its bare value in an interval column.
    assert _interval(0.5, None, None) == "0.50" and _interval(0.004, 0.001, 0.0123) == "0.004 [0.001, 0.01]"


def test_old_runs_keep_the_old_default_metrics(tmp_path: Path) -> None:
    _job(tmp_path, "0_a", ["strategy.lr=1"], {"value_loss": 0.5, "edit_time_s": 1.0})
    _job(tmp_path, "1_b", ["strategy.lr=2"], {"value_loss": 0.25, "edit_time_s": 2.0})
    sweep = load_sweep(tmp_path)
    assert default_metrics(sweep) == list(DEFAULT_METRICS)
    assert table(sweep, default_metrics(sweep))[0] == ["strategy.lr", "value_loss", "edit_time_s"]


def test_group_pools_jobs_that_differ_only_in_the_given_keys(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    _headline_sweep(tmp_path)
    grouped = group_jobs(load_sweep(tmp_path), ["edit.heldout_start"])
    assert [(r["strategy"], r["edit.heldout_start"], r["jobs"]) for r in grouped.rows] == [
        ("rank_one", "0,8", 2), ("closed_form", "0,8", 2), ("layer_finetune", "0", 1)]
    assert grouped.rows[0]["generality"] == pytest.approx(0.60)
    assert grouped.rows[0]["generality_sd"] == pytest.approx(0.04 / 2**0.5)  # sample sd of 0.62, 0.58
    assert "generality_sd" not in grouped.rows[2] and "generality_ci_low" not in grouped.rows[0]
    header, cells = table(grouped, ["generality", "edit_time_s"])
    assert header == ["strategy", "edit.heldout_start", "jobs", "generality", "edit_time_s"]
    assert cells[0] == ["rank_one", "0,8", "2", "0.600 ± 0.028", "0.650 ± 0.071"] and cells[2][3] == "0.800"
    main([str(tmp_path), "--group", "edit.heldout_start", "--metrics", "generality", "--csv", str(tmp_path / "g.csv")])
    assert "mean ± sd over the row's jobs" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "g.csv").open()))
    assert list(rows[0]) == ["strategy", "edit.heldout_start", "jobs", "generality", "generality_sd"]
    assert rows[2]["generality_sd"] == ""  # one job: no spread
    with pytest.raises(SystemExit, match="no override named seed; overrides: strategy, edit.heldout_start"):
        main([str(tmp_path), "--group", "seed"])


def test_pareto_front_on_hand_made_points() -> None:
    pts = [(0.2, 0.9), (0.5, 0.5), (0.4, 0.4), (0.9, 0.1), (0.5, 0.5), (0.9, 0.05), (0.1, 0.9), (math.nan, 1.0),
           (0.6, 0.5), (0.0, 0.95)]
    # (0.4, 0.4) and (0.5, 0.5) x2 lose to (0.6, 0.5); (0.9, 0.05) to (0.9, 0.1); (0.1, 0.9) to (0.2, 0.9); NaN never.
    assert pareto_front(pts) == [9, 0, 8, 3]
    assert pareto_front([(0.5, 0.5), (0.5, 0.5)]) == [0, 1]  # equal points do not dominate each other
    assert pareto_front([]) == []


def test_pareto_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _headline_sweep(tmp_path / "sweep")
    png = tmp_path / "front.png"
    main([str(tmp_path / "sweep"), "--pareto", str(png)])
    assert "wrote" in capsys.readouterr().out and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    assert short_label({"strategy": "rank_one", "edit.heldout_start": "8"}, ["strategy", "edit.heldout_start"]) == (
        "rank_one heldout_start=8")
    assert short_label({"strategy.lr": "0.05" * 20}, ["strategy.lr"], max_len=12) == "lr=0.050.05…"
    assert marker_sizes([0.01, 0.1, 1.0, math.nan]) == [25.0, 137.5, 250.0, 137.5]  # linear in log time
    _job(tmp_path / "old", "0_a", ["strategy.lr=1"], {"value_loss": 0.5})
    with pytest.raises(SystemExit, match="no job has both generality and specificity"):
        main([str(tmp_path / "old"), "--pareto", str(tmp_path / "old.png")])
