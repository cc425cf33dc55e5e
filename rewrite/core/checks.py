"""Checked settings: the type and range checks of numeric config values, in one place.

Why: a value of the wrong type or range (`eval.tol=inf`, `strategy.rank=1.5`, `stats.num_samples=abc`) must
stop a run before any work, with a message naming its key, the rule and the value, the same way for every key:
`eval.tol must be a number in (0, 1], got inf`. A wrong type says the type (and the range, where the check
has one); a value of the right type out of range says the range (`strategy.rank must be ≥ 1, got 0`).
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

KINDS = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """The range in words: 'in (0, 1]', '≥ 1', '> 0' or '' (no range)."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '≥'} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '≤'} {high:g}"
    return ""


def check_type(key: str, value: Any, kind: type, bounds: str = "") -> Any:
    """`value` as `kind` (int, float, bool or str): a float may be given as an integer and must be finite,
    an integer is never a bool or a float. Raises ValueError naming `key` (and `bounds`, the range in words)."""
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        what = "a number" if kind is float and bounds.startswith("in ") else KINDS[kind]  # an interval is finite
        raise ValueError(f"{key} must be {what}{' ' + bounds if bounds else ''}, got {value!r}")
    return value


def check_range(key: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise ValueError naming `key` when `value` lies outside [low, high] (an open end excludes its bound)."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"{key} must be {_bounds(low, high, low_open, high_open)}, got {value!r}")


def integer(key: str, value: Any, minimum: int | None = None) -> int:
    """`value` as an integer ≥ `minimum`, or a ValueError naming `key`."""
    out = check_type(key, value, int, _bounds(minimum, None, False, False))
    check_range(key, out, minimum)
    return out


def number(key: str, value: Any, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a finite float in its range, or a ValueError naming `key`."""
    out = check_type(key, value, float, _bounds(low, high, low_open, high_open))
    check_range(key, out, low, high, low_open, high_open)
    return out


def shard_settings(num_samples: int, batch_size: int, shards: Any, shard: Any = None) -> None:
    """`stats.shards` (K) in [1, the number of batches] (a shard holds whole batches) and `stats.shard` (I) in
    [0, K-1], or a ValueError naming the key."""
    integer("stats.shards", shards, 1)
    batches = -(-num_samples // batch_size)
    if shards > batches:
        raise ValueError(f"stats.shards must be in [1, {batches}], got {shards}: a shard holds whole batches, and "
                         f"stats.num_samples={num_samples} at stats.batch_size={batch_size} makes {batches} "
                         f"batch{'es' if batches != 1 else ''}")
    if shard is not None:
        bounds = _bounds(0, shards - 1, False, False)
        check_range("stats.shard", check_type("stats.shard", shard, int, bounds), 0, shards - 1)


def check_run_config(cfg: DictConfig) -> None:
    """The numeric settings of a run config (`eval`, `stats`, `split`), checked before anything is built.

    `eval.tol` is a colour tolerance on images in [0, 1]: 0 would count no pixel and above 1 every pixel
    (inf or nan make every score meaningless); `eval.margin` counts pixels. Strategy settings are checked by
    the strategy's typed config when it is built (`rewrite.strategies.base.StrategyConfig`).
    """
    number("eval.tol", cfg.eval.tol, 0, 1, low_open=True)
    integer("eval.margin", cfg.eval.margin, 0)
    integer("stats.num_samples", cfg.stats.num_samples, 1)
    integer("stats.batch_size", cfg.stats.batch_size, 1)
    integer("stats.seed", cfg.stats.seed)
    shards, shard = cfg.stats.get("shards"), cfg.stats.get("shard")
    if shard is not None and shards is None:
        raise ValueError(f"stats.shard={shard} needs stats.shards, the number of shards K (stats.shard is in [0, K-1])")
    if shards is not None:
        shard_settings(cfg.stats.num_samples, cfg.stats.batch_size, shards, shard)
        if not cfg.stats.get("cache_dir"):
            raise ValueError(f"stats.shards={shards} needs stats.cache_dir, the folder shards are saved to and "
                             f"merged from, got {cfg.stats.get('cache_dir')!r}")
    integer("split.heldout_offset", cfg.split.heldout_offset, 0)
    fid = cfg.eval.get("fid")  # absent in the configs of runs from before FID (rescore reads those)
    if fid is not None:
        samples = integer("eval.fid.samples", fid.samples, 0)
        if samples == 1:
            raise ValueError("eval.fid.samples must be 0 (off) or ≥ 2 (FID and KID need two samples), got 1")
        integer("eval.fid.seed", fid.seed, 0)
        integer("eval.fid.batch_size", fid.batch_size, 1)
        integer("eval.fid.kid_subsets", fid.kid_subsets, 1)
        integer("eval.fid.kid_subset_size", fid.kid_subset_size, 2)
