"""One table from a Hydra multirun: a row per job (its overrides), a column per metric.

    python -m rewrite.bench.sweep_table multirun/2026-11-26/18-30-00
    python -m rewrite.bench.sweep_table SWEEP_DIR --metrics value_loss,key_selectivity --csv table.csv
    python -m rewrite.bench.sweep_table SWEEP_DIR --group edit.heldout_start --pareto front.png

Comparison sweeps end with dozens of `metrics.json` files; this reads them back so that strategies
can be compared side by side without opening W&B. Only overrides that differ between jobs become
columns. A job folder is read only when it is complete and fresh (`read_run`): a run writes
`metrics.json` last, recording the overrides it ran with, so a failed, killed or still running job, a
corrupt `metrics.json`, or metrics left by an earlier run beside a re-run's new `.hydra/overrides.yaml`
are skipped and listed with the reason (a logged warning), never shown as a row.
A metric with `<name>_ci_low` / `<name>_ci_high` siblings prints as one cell, `0.62 [0.55, 0.70]`
(value and its 95% interval); the CSV keeps the three numbers in their own columns.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from rewrite.runner.runfolder import HYDRA_OVERRIDES, RUN_OVERRIDES, IncompleteRun, read_run, skipped_message

# The headline metrics every run reports; the table shows them when any job has them.
HEADLINE_METRICS = ("efficacy", "generality", "specificity", "edit_score", "edit_time_s")
# Older runs (no headline metrics) fall back to these.
DEFAULT_METRICS = (
    "value_loss",
    "toy_efficacy",
    "toy_damage_l1_outside_footprint",
    "toy_segmenter_changed_fraction",
    "heldout_collateral_l1",
    "heldout_value_shift_to_goal",
    "edit_time_s",
)
CI_LOW, CI_HIGH, SD = "_ci_low", "_ci_high", "_sd"
JOBS = "jobs"  # column of a grouped table: how many jobs a row pools

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sweep:
    rows: list[dict[str, object]]  # overrides (key -> value string) and metrics of each complete job
    skipped: dict[str, str]  # job folder (relative to the sweep folder) -> why it is not a row
    grouped_by: tuple[str, ...] = ()  # set by group_jobs: each row is the mean of jobs differing only in these


def load_sweep(sweep_dir: str | Path) -> Sweep:
    """Read every job folder (one holding `.hydra/overrides.yaml`) under `sweep_dir`; incomplete ones are skipped."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep folder {root} does not exist")
    jobs = sorted((p.parent.parent for p in root.rglob(HYDRA_OVERRIDES.as_posix())), key=_job_order)  # nested too
    if not jobs:
        raise ValueError(f"{root} holds no Hydra job folders (*/.hydra/overrides.yaml); is it a multirun folder?")
    rows, skipped = [], {}
    for job in jobs:
        try:
            overrides, metrics = read_run(job)
        except IncompleteRun as e:
            skipped[job.relative_to(root).as_posix()] = str(e)
            continue
        row: dict[str, object] = dict(o.split("=", 1) for o in overrides or [] if "=" in o)
        row.update((k, v) for k, v in metrics.items() if k != RUN_OVERRIDES)
        rows.append(row)
    return Sweep(rows, skipped)


def _job_order(job: Path) -> tuple[int, str]:
    """Hydra numbers jobs `<n>_<overrides>`; sort by n, not as text (10 after 9)."""
    head = job.name.split("_", 1)[0]
    return (int(head), job.name) if head.isdigit() else (sys.maxsize, job.name)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def metric_keys(sweep: Sweep) -> list[str]:
    """Keys with a numeric value in some job, in first-seen order; every other key is an override (or a label)."""
    return list(dict.fromkeys(k for r in sweep.rows for k, v in r.items() if _is_number(v)))


NOT_SETTINGS = {"shared_work_reused"}  # text a job reports about how it ran, not what it ran with


def varying_overrides(sweep: Sweep, metrics: set[str]) -> list[str]:
    """Override keys whose value differs between jobs, in first-seen order."""
    keys: list[str] = []
    for row in sweep.rows:
        keys += [k for k in row if k not in metrics and k not in keys and k not in NOT_SETTINGS]
    return [k for k in keys if len({str(r.get(k)) for r in sweep.rows}) > 1]


def default_metrics(sweep: Sweep) -> list[str]:
    """The headline metrics when any job reports one of them, else the older per-run metrics."""
    headline = set(HEADLINE_METRICS) - set(DEFAULT_METRICS)  # edit_time_s is in old runs too: not a sign
    return list(HEADLINE_METRICS if headline & set(metric_keys(sweep)) else DEFAULT_METRICS)


def has_interval(sweep: Sweep, metric: str) -> bool:
    """Whether some job gives both ends of a 95% interval for `metric`."""
    return any(_is_number(r.get(metric + CI_LOW)) and _is_number(r.get(metric + CI_HIGH)) for r in sweep.rows)


def _has_spread(sweep: Sweep, metric: str) -> bool:
    return bool(sweep.grouped_by) and any(metric + SD in r for r in sweep.rows)


def _columns(sweep: Sweep, metrics: list[str]) -> tuple[list[str], list[str]]:
    """The varying overrides (plus `jobs` when grouped) and the requested metrics present in any job."""
    all_metrics = metric_keys(sweep)
    shown = [m for m in metrics if m in all_metrics]
    overrides = varying_overrides(sweep, set(all_metrics))
    return overrides + ([JOBS] if sweep.grouped_by else []), shown


def table(sweep: Sweep, metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells: the varying overrides, then the requested metrics present in any job.

    A metric with an interval prints as `value [low, high]`; in a grouped sweep as `mean ± sd`.
    """
    keys, shown = _columns(sweep, metrics)
    spread = {m for m in shown if _has_spread(sweep, m)}
    interval = {m for m in shown if not sweep.grouped_by and has_interval(sweep, m)}

    def cell(row: dict[str, object], k: str) -> str:
        if k in spread:
            return _mean_sd(row.get(k), row.get(k + SD))
        if k in interval:
            return _interval(row.get(k), row.get(k + CI_LOW), row.get(k + CI_HIGH))
        return _cell(row.get(k))

    header = keys + shown
    return header, [[cell(row, k) for k in header] for row in sweep.rows]


def csv_columns(sweep: Sweep, metrics: list[str]) -> list[str]:
    """The table's columns with each interval (or grouped sd) in its own numeric column, for full precision."""
    keys, shown = _columns(sweep, metrics)
    for m in shown:
        if _has_spread(sweep, m):
            keys += [m, m + SD]
        elif not sweep.grouped_by and has_interval(sweep, m):
            keys += [m, m + CI_LOW, m + CI_HIGH]
        else:
            keys.append(m)
    return keys


def group_jobs(sweep: Sweep, keys: list[str]) -> Sweep:
    """One row per set of jobs that differ only in `keys` (seeds, held-out slices): the spread across them is the
    uncertainty worth reading. Metrics become the mean with `<name>_sd` (sample sd, where 2+ jobs have it) and a
    `jobs` count; the pooled values of `keys` are joined with commas. Per-job intervals are dropped: averaging
    their ends would not give an interval of the mean.
    """
    numeric = metric_keys(sweep)
    overrides = [k for k in dict.fromkeys(k for r in sweep.rows for k in r) if k not in numeric]
    unknown = [k for k in keys if k not in overrides]
    if unknown:
        raise ValueError(f"--group: no override named {', '.join(unknown)}; overrides: {', '.join(overrides)}")
    bounds = {m + s for m in numeric for s in (CI_LOW, CI_HIGH)}
    pooled = [m for m in numeric if m not in bounds]
    groups: dict[tuple[tuple[str, str], ...], list[dict[str, object]]] = {}
    for row in sweep.rows:
        ident = tuple((k, str(row.get(k))) for k in overrides if k not in keys)
        groups.setdefault(ident, []).append(row)
    rows = []
    for members in groups.values():
        out: dict[str, object] = {}
        for k in overrides:
            values = list(dict.fromkeys(str(r[k]) for r in members if k in r))
            if values:
                out[k] = ",".join(values)
        out[JOBS] = len(members)
        for m in pooled:
            values = [x for r in members if (x := _num(r.get(m))) is not None]
            if values:
                out[m] = statistics.fmean(values)
            if len(values) > 1:
                out[m + SD] = statistics.stdev(values)
        rows.append(out)
    return Sweep(rows, sweep.skipped, tuple(keys))


def _cell(v: object) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def _short(v: float) -> str:
    """Two decimals for headline-sized numbers (`0.62`), significant digits for tiny or huge ones."""
    if math.isnan(v):
        return "nan"
    return f"{v:.2f}" if v == 0 or 0.01 <= abs(v) < 1000 else f"{v:.2g}"


def _interval(v: object, lo: object, hi: object) -> str:
    """`0.62 [0.55, 0.70]`; just the value where a job gave no interval."""
    x, a, b = _num(v), _num(lo), _num(hi)
    if x is None:
        return _cell(v)
    return _short(x) if a is None or b is None else f"{_short(x)} [{_short(a)}, {_short(b)}]"


def _mean_sd(mean: object, sd: object) -> str:
    """`0.617 ± 0.031`; just the mean where only one job of the row had the metric."""
    x, s = _num(mean), _num(sd)
    if x is None:
        return _cell(mean)
    text = f"{x:#.3g}".rstrip(".")  # three digits kept even when trailing zeros: 0.500, not 0.5
    return text + ("" if s is None else f" ± {s:.2g}")


def markdown(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", help="the multirun folder (one sub-folder per job)")
    ap.add_argument("--metrics", help="comma-separated metric names (default: " + ", ".join(HEADLINE_METRICS)
                    + " when any job has them, else " + ", ".join(DEFAULT_METRICS) + ")")
    ap.add_argument("--csv", metavar="FILE", help="also write the table (full precision) to this CSV file")
    ap.add_argument("--group", metavar="KEYS",
                    help="comma-separated override keys (e.g. edit.heldout_start or seed): one row per set of jobs "
                         "that differ only in these, metrics as mean ± sd over the row's jobs plus a jobs column")
    ap.add_argument("--pareto", metavar="FILE.png",
                    help="also write a generality-vs-specificity scatter (one point per job, --group or not): "
                         "95%% interval bars, colour per strategy, marker size ~ log edit_time_s, Pareto front")
    args = ap.parse_args(argv)
    try:  # every refusal comes before the table is printed: a bad --csv name costs nothing
        sweep = load_sweep(args.sweep_dir)
        shown = group_jobs(sweep, [k for k in args.group.split(",") if k]) if args.group else sweep
        for flag, name in (("--csv", args.csv), ("--pareto", args.pareto)):
            if name:
                check_output_file(flag, Path(name))
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    if sweep.skipped:
        log.warning("%s", skipped_message(sweep.skipped))
    if not sweep.rows:
        sys.exit(f"error: no complete job folder in {args.sweep_dir}")
    if args.pareto:
        from rewrite.bench.pareto import plottable

        if not plottable(sweep.rows):
            sys.exit("error: --pareto: no job has both generality and specificity in its metrics.json; "
                     "nothing to plot")
    metrics = [m for m in args.metrics.split(",") if m] if args.metrics else default_metrics(sweep)
    header, cells = table(shown, metrics)
    print(markdown(header, cells))
    if shown.grouped_by:
        print(f"\nrows pool jobs that differ only in {', '.join(shown.grouped_by)}: mean ± sd over the row's jobs")
    elif any(has_interval(shown, m) for m in header):
        print("\nvalue [low, high]: the metric and its 95% interval (<name>_ci_low, <name>_ci_high)")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=csv_columns(shown, metrics), extrasaction="ignore")
            w.writeheader()
            w.writerows(shown.rows)
    if args.pareto:
        from rewrite.bench.pareto import plot_pareto

        labels = varying_overrides(sweep, set(metric_keys(sweep)))
        n = plot_pareto(sweep.rows, args.pareto, labels, title=f"{Path(args.sweep_dir).name}: generality vs "
                        "specificity")
        print(f"\nwrote {args.pareto} ({n} job(s))")


def check_output_file(flag: str, path: Path) -> None:
    """`path` can be written as a file: it is not a folder and its folder exists and is writable. Checked before
    anything is printed; a missing folder is not created, so a typo in it does not leave new folders behind."""
    folder = path.parent
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path}: is a folder; name a file")
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{flag} {path}: {folder} is a file, not a folder")
    if not folder.is_dir():
        raise FileNotFoundError(f"{flag} {path}: folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{flag} {path}: folder {folder} is not writable")

if __name__ == "__main__":
    main()
