"""The few lines a person reads at the end of a run; the full dict stays in metrics.json."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _num(v: Any, fmt: str = ".3f") -> str:
    return "  -  " if not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)) else f"{v:{fmt}}"


def _interval(m: Mapping[str, Any], name: str) -> str:
    lo, hi = m.get(f"{name}_ci_low"), m.get(f"{name}_ci_high")
    return f"[{_num(lo)}, {_num(hi)}]" if lo is not None and hi is not None else ""


def run_summary(m: Mapping[str, Any], out_dir: str | Path, title: str) -> str:
    """A short table: the four headline scores with 95% intervals, the paste ceiling beside efficacy and
    generality, the worst-kept part, FID / KID when measured, the edit time and where the grid and the numbers are."""
    lines = [title]
    ceiling = {"efficacy": m.get("ceiling_efficacy"), "generality": m.get("ceiling_generality")}
    for name in ("efficacy", "generality", "specificity", "edit_score"):
        extra = ""
        if ceiling.get(name) is not None:
            extra = f"ceiling {_num(ceiling[name])}"
            if name == "generality" and m.get("n_ceiling_heldout") is not None:
                extra += f" ({m['n_ceiling_heldout']} scenes)"
        if name == "specificity" and m.get("specificity_worst_class_name"):
            extra = f"worst part {m['specificity_worst_class_name']} {_num(m.get('specificity_worst_class'))}"
            if m.get("specificity_pixels") is not None:
                extra += f", pixels {_num(m['specificity_pixels'])}"
        lines.append(f"  {name:<12} {_num(m.get(name))}  {_interval(m, name):<17} {extra}".rstrip())
    if m.get("fid") is not None:
        lines.append(f"  FID {_num(m['fid'])}, KID {_num(m.get('kid_mean'), '.3g')} ± {_num(m.get('kid_std'), '.2g')} "
                     f"({m.get('fid_samples')} samples before/after the edit, same seeds)")
    lines.append(f"  edit time {_num(m.get('edit_time_s'))} s, statistics {_num(m.get('stats_time_s'))} s"
                 f"{' (cached)' if m.get('stats_cached') else ''}")
    out = Path(out_dir)
    lines.append(f"  grid: {out / 'grid.png'}   all numbers: {out / 'metrics.json'}")
    return "\n".join(lines)
