"""Generality-vs-specificity Pareto plot of a sweep: one point per job, the non-dominated jobs joined.

An edit is a trade-off between changing what the rule covers (generality) and leaving the rest alone
(specificity); a single score hides which jobs are worth keeping, the front shows it at a glance.
`rewrite.bench.sweep_table --pareto FILE.png` calls `plot_pareto`; matplotlib is imported only then.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

X, Y, TIME = "generality", "specificity", "edit_time_s"
LIMITS = (0.0, 1.02)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point matches in both coordinates and beats in one (both maximised).

    Sorted by x ascending (so y descending), the order a step line needs. Equal points do not dominate each
    other, so duplicates on the front are all kept; points with a NaN coordinate are never on it.
    """
    ok = [i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    front = [i for i in ok
             if not any(points[j][0] >= points[i][0] and points[j][1] >= points[i][1] and points[j] != points[i]
                        for j in ok)]
    return sorted(front, key=lambda i: (points[i][0], -points[i][1], i))


def short_label(row: dict[str, object], keys: Sequence[str], max_len: int = 40) -> str:
    """`rank_one lr=0.05` from `strategy=rank_one strategy.lr=0.05`, so labels fit the plot: a config group choice
    (no dot in the key) by its value alone, any other override by the last part of its key; appended config
    groups (`+experiment=...`) are left out.
    """
    shown = [k for k in keys if k in row and not k.startswith("+")]  # `+experiment=...` only repeats the strategy
    text = " ".join(str(row[k]) if "." not in k else f"{k.rsplit('.', 1)[-1]}={row[k]}" for k in shown)
    return text if len(text) <= max_len else text[: max_len - 1] + "…"


def _num(row: dict[str, object], key: str) -> float:
    v = row.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def _err(row: dict[str, object], key: str) -> tuple[float, float]:
    """Distances from the value down to `<key>_ci_low` and up to `<key>_ci_high` (0 where absent)."""
    v, lo, hi = _num(row, key), _num(row, f"{key}_ci_low"), _num(row, f"{key}_ci_high")
    if math.isnan(lo) or math.isnan(hi):
        return 0.0, 0.0
    return max(v - lo, 0.0), max(hi - v, 0.0)


def marker_sizes(times: Sequence[float], smallest: float = 25.0, largest: float = 250.0) -> list[float]:
    """Marker areas growing linearly with log edit time (fast to slow); the middle size where the time is unknown."""
    logs = [math.log10(t) if t > 0 else math.nan for t in times]
    known = [v for v in logs if not math.isnan(v)]
    lo, hi = (min(known), max(known)) if known else (0.0, 0.0)
    mid = (smallest + largest) / 2
    if hi <= lo:
        return [mid] * len(times)
    return [mid if math.isnan(v) else smallest + (largest - smallest) * (v - lo) / (hi - lo) for v in logs]


def plottable(rows: Sequence[dict[str, object]]) -> list[int]:
    """Indices of the rows with both coordinates: the jobs a plot can show (checked before any output)."""
    return [n for n, r in enumerate(rows) if not (math.isnan(_num(r, X)) or math.isnan(_num(r, Y)))]


def plot_pareto(rows: Sequence[dict[str, object]], path: str | Path, label_keys: Sequence[str],
                title: str = "") -> int:
    """Write the PNG; returns how many jobs were plotted (those with both generality and specificity)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg directly: no display, no pyplot state
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    where = plottable(rows)
    jobs = [rows[n] for n in where]
    if not jobs:
        raise ValueError(f"no job has both {X} and {Y} in its metrics.json; nothing to plot")
    pts = [(_num(r, X), _num(r, Y)) for r in jobs]
    times = [_num(r, TIME) for r in jobs]
    sizes = marker_sizes(times)
    strategies = list(dict.fromkeys(str(r.get("strategy", "?")) for r in jobs))

    fig = Figure(figsize=(7.5, 6.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    palette = [f"C{i % 10}" for i in range(len(strategies))]
    for name, colour in zip(strategies, palette, strict=True):
        idx = [i for i, r in enumerate(jobs) if str(r.get("strategy", "?")) == name]
        xerr = [[_err(jobs[i], X)[0] for i in idx], [_err(jobs[i], X)[1] for i in idx]]
        yerr = [[_err(jobs[i], Y)[0] for i in idx], [_err(jobs[i], Y)[1] for i in idx]]
        xs, ys = [pts[i][0] for i in idx], [pts[i][1] for i in idx]
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor=colour, alpha=0.45, lw=1, zorder=1)
        ax.scatter(xs, ys, s=[sizes[i] for i in idx], c=colour, edgecolors="black", linewidths=0.5, zorder=3)

    front = pareto_front(pts)
    ax.step([pts[i][0] for i in front], [pts[i][1] for i in front], where="pre", color="black", lw=1.2,
            ls="--", zorder=2)
    for n, i in enumerate(front):  # alternate above/below so neighbours on the front do not overprint
        text = short_label(jobs[i], label_keys) or f"#{where[i]}"
        right = pts[i][0] > 0.6  # near the right edge: label to the left of the point
        ax.annotate(text, pts[i], xytext=(-7 if right else 7, 6 if n % 2 == 0 else -12), textcoords="offset points",
                    ha="right" if right else "left", fontsize=7, zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75})

    ax.set_xlim(*LIMITS)
    ax.set_ylim(*LIMITS)
    ax.set_xlabel(X)
    ax.set_ylabel(Y)
    ax.set_title(title or f"{X} vs {Y}", fontsize=10)
    ax.grid(alpha=0.3)
    colours = [Line2D([], [], ls="", marker="o", color=c, markeredgecolor="black", markersize=7, label=name)
               for name, c in zip(strategies, palette, strict=True)]
    ax.add_artist(ax.legend(handles=colours, title="strategy", loc="lower left", fontsize=8, title_fontsize=8))
    known = sorted(t for t in times if t > 0)  # NaN compares False: unknown times drop out
    if known:
        picks = list(dict.fromkeys([known[0], known[len(known) // 2], known[-1]]))
        handles = [Line2D([], [], ls="", marker="o", color="grey", markeredgecolor="black",
                          markersize=math.sqrt(sizes[times.index(t)]), label=f"{t:.3g} s") for t in picks]
        ax.legend(handles=handles, title="edit time (size ~ log s)", loc="lower center", fontsize=8,
                  title_fontsize=8, labelspacing=1.2, borderpad=0.8)
    fig.text(0.01, 0.005, "bars: 95% intervals where given; dashed step: Pareto front (labelled), no job is at least "
             "as good in both and better in one", fontsize=7, color="dimgrey")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, format="png")
    return len(jobs)
