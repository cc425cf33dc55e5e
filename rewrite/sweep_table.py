"""One table from a Hydra multirun: a row per job (its overrides), a column per metric.

    python -m rewrite.sweep_table multirun/2026-11-26/18-30-00
    python -m rewrite.sweep_table SWEEP_DIR --metrics value_loss,toy_efficacy --csv table.csv

Comparison sweeps end with dozens of `metrics.json` files; this reads them back so that strategies
can be compared side by side without opening W&B. Only overrides that differ between jobs become
columns; jobs that left no `metrics.json` (failed or still running) are listed, not silently dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

DEFAULT_METRICS = (
    "value_loss",
    "toy_efficacy",
    "toy_damage_l1_outside_footprint",
    "toy_segmenter_changed_fraction",
    "heldout_collateral_l1",
    "heldout_value_shift_to_goal",
    "edit_time_s",
)


@dataclass(frozen=True)
class Sweep:
    rows: list[dict[str, object]]  # overrides (key -> value string) and metrics of each finished job
    unfinished: list[str]  # job folders without metrics.json


def load_sweep(sweep_dir: str | Path) -> Sweep:
    """Read every job folder (one holding `.hydra/overrides.yaml`) under `sweep_dir`."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep folder {root} does not exist")
    jobs = sorted((p.parent.parent for p in root.glob("*/.hydra/overrides.yaml")), key=_job_order)
    if not jobs:
        raise ValueError(f"{root} holds no Hydra job folders (*/.hydra/overrides.yaml); is it a multirun folder?")
    rows, unfinished = [], []
    for job in jobs:
        metrics = job / "metrics.json"
        if not metrics.is_file():
            unfinished.append(job.name)
            continue
        overrides = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml")) or []
        row: dict[str, object] = dict(o.split("=", 1) for o in overrides if "=" in o)
        row.update(json.loads(metrics.read_text()))
        rows.append(row)
    return Sweep(rows, unfinished)


def _job_order(job: Path) -> tuple[int, str]:
    """Hydra numbers jobs `<n>_<overrides>`; sort by n, not as text (10 after 9)."""
    head = job.name.split("_", 1)[0]
    return (int(head), job.name) if head.isdigit() else (sys.maxsize, job.name)


def varying_overrides(sweep: Sweep, metrics: set[str]) -> list[str]:
    """Override keys whose value differs between jobs, in first-seen order."""
    keys: list[str] = []
    for row in sweep.rows:
        keys += [k for k in row if k not in metrics and k not in keys]
    return [k for k in keys if len({str(r.get(k)) for r in sweep.rows}) > 1]


def table(sweep: Sweep, metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells: the varying overrides, then the requested metrics present in any job."""
    all_metric_keys = {k for r in sweep.rows for k, v in r.items() if isinstance(v, int | float)}
    shown = [m for m in metrics if m in all_metric_keys]
    keys = varying_overrides(sweep, all_metric_keys) + shown
    return keys, [[_cell(row.get(k)) for k in keys] for row in sweep.rows]


def _cell(v: object) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def markdown(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir")
    ap.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated metric names")
    ap.add_argument("--csv", help="also write the table (full precision) to this CSV file")
    args = ap.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep_dir)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    metrics = [m for m in args.metrics.split(",") if m]
    header, cells = table(sweep, metrics)
    print(markdown(header, cells))
    if sweep.unfinished:
        print(f"\n{len(sweep.unfinished)} job(s) without metrics.json: " + ", ".join(sweep.unfinished))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
            w.writeheader()
            w.writerows(sweep.rows)


if __name__ == "__main__":
    main()
