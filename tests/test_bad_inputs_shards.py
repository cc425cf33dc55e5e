"""Bad inputs of statistics in shards: each gets its README row's error (the table test reads CASES)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rewrite.core.shards import ShardError, shard_name
from rewrite.core.stats import StatsCache, key_statistics
from tests.test_stats_shards import B, N, rewrite_main, save_shards, tiny_site

pytestmark = pytest.mark.usefixtures("one_thread")


def _missing(tmp: Path) -> None:
    site = tiny_site()
    save_shards(site, StatsCache(tmp), 4, [0, 2])
    key_statistics(site, StatsCache(tmp), N, B, seed=3, progress=False)


def _duplicated(tmp: Path) -> None:
    site = tiny_site()
    save_shards(site, StatsCache(tmp), 2, [0])
    key = key_statistics(site, None, N, B, seed=3, progress=False).spec.key()
    shutil.copy(tmp / shard_name(key, 2, 0), tmp / shard_name(key, 2, 1))
    key_statistics(site, StatsCache(tmp), N, B, seed=3, progress=False)


def _other_weights(tmp: Path) -> None:
    site, other = tiny_site(), tiny_site()
    with torch.no_grad():
        other.adapter.model.main[0].weight.add_(0.1)
    save_shards(other, StatsCache(tmp), 2)
    spec, other_spec = (key_statistics(s, None, N, B, seed=3, progress=False).spec for s in (site, other))
    for i in range(2):  # renamed to this statistic's cache key
        (tmp / shard_name(other_spec.key(), 2, i)).rename(tmp / shard_name(spec.key(), 2, i))
    key_statistics(site, StatsCache(tmp), N, B, seed=3, progress=False)


CASES: dict[str, tuple[type[BaseException] | None, str, Callable[..., object]]] = {
    "shard_missing": (ShardError, "2 of 4 missing: shard 1", _missing),
    "shard_duplicated": (ShardError, "a duplicated", _duplicated),
    "shard_of_other_weights": (ShardError, "computed for another statistic", _other_weights),
    "shard_out_of_range": (ValueError, "stats.shard must be in [0, 1], got 2",
                           lambda tmp: rewrite_main("stats.shards=2", "stats.shard=2", f"stats.cache_dir={tmp}",
                                                    f"hydra.run.dir={tmp}/run")),
    "shard_without_shards": (ValueError, "stats.shard=0 needs stats.shards",
                             lambda tmp: rewrite_main("stats.shard=0", f"hydra.run.dir={tmp}/run")),
    "shards_without_cache": (ValueError, "stats.shards=2 needs stats.cache_dir",
                             lambda tmp: rewrite_main("stats.shards=2", "stats.shard=0", "stats.cache_dir=null",
                                                      f"hydra.run.dir={tmp}/run")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_shard_input_gets_its_error(case: str, tmp_path: Path) -> None:
    exc, message, trigger = CASES[case]
    with pytest.raises(exc, match=re.escape(message)):
        trigger(tmp_path)
    assert not any(p.name.endswith("float64.safetensors") for p in tmp_path.iterdir())  # nothing merged or cached
