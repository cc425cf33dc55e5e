"""rewrite.sweep_table on hand-made job folders (the real multirun is read back in test_run)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rewrite.sweep_table import load_sweep, main, table


def _job(root: Path, name: str, overrides: list[str], metrics: dict | None) -> None:
    (root / name / ".hydra").mkdir(parents=True)
    (root / name / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (root / name / "metrics.json").write_text(json.dumps(metrics))


def test_rows_columns_and_unfinished_jobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(11):  # job 10 must come after job 9, not after job 1
        _job(tmp_path, f"{i}_lr={i}", ["logger=csv", f"strategy.lr={i}"], {"value_loss": i / 10, "strategy": "x"})
    _job(tmp_path, "11_lr=11", ["logger=csv", "strategy.lr=11"], None)
    sweep = load_sweep(tmp_path)
    assert [r["strategy.lr"] for r in sweep.rows] == [str(i) for i in range(11)]
    assert sweep.unfinished == ["11_lr=11"]
    header, cells = table(sweep, ["value_loss", "not_a_metric"])
    assert header == ["strategy.lr", "value_loss"]  # logger and strategy never vary: not columns
    assert cells[10] == ["10", "1"]
    main([str(tmp_path), "--metrics", "value_loss", "--csv", str(tmp_path / "t.csv")])
    out = capsys.readouterr().out
    assert "| 3 | 0.3 |" in out and "1 job(s) without metrics.json: 11_lr=11" in out
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [float(r["value_loss"]) for r in rows] == [i / 10 for i in range(11)]


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sweep(tmp_path / "nope")
    with pytest.raises(ValueError, match="no Hydra job folders"):
        load_sweep(tmp_path)
