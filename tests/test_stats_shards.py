"""Key statistics in shards: merged == single pass (float64), the same cache file, clear errors for missing,
duplicated, overlapping and foreign shards, shard runs that stop with exit 0, and a real multirun over shards."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors import safe_open
from torch import nn

import rewrite.cli
from rewrite.core import shards as shards_cli
from rewrite.core.checks import check_run_config
from rewrite.core.shards import ShardError, save_key_shard, shard_name, shard_range
from rewrite.core.site import EditSite
from rewrite.core.stats import SecondMoment, StatsCache, collect_key_moment, key_statistics
from rewrite.generators.base import GeneratorAdapter
from rewrite.generators.tiny import load_tiny
from rewrite.pipeline import CONF_DIR

pytestmark = pytest.mark.usefixtures("one_thread")

N, B = 37, 5  # 8 batches, the last one short: shards of 3 are uneven ([0, 10), [10, 25), [25, 37))


def tiny_site() -> EditSite:
    return EditSite(load_tiny(), "main.4", "main.6")


def odd_site() -> EditSite:
    """Latents of 12 values (not a multiple of torch's 16-value randn blocks) and a conv layer."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(), nn.Conv2d(6, 4, 1))
    return EditSite(GeneratorAdapter(model, (3, 2, 2), "odd"), "2")


def save_shards(site: EditSite, cache: StatsCache, k: int, which: list[int] | None = None, n: int = N,
                batch: int = B) -> None:
    for i in range(k) if which is None else which:
        save_key_shard(site, cache, n, batch, 3, "float64", k, i, progress=False)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def file_layout(path: Path) -> tuple[dict[str, str], dict[str, tuple[torch.dtype, tuple[int, ...]]]]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: (f.get_tensor(k).dtype, tuple(f.get_tensor(k).shape)) for k in f.keys()}


@pytest.mark.parametrize(("make_site", "k"), [(tiny_site, 3), (tiny_site, 8), (tiny_site, 1), (odd_site, 4)])
def test_merged_shards_equal_the_single_pass_in_the_same_cache_file(tmp_path: Path, make_site, k: int) -> None:
    site = make_site()
    single_cache, shard_cache = StatsCache(tmp_path / "single"), StatsCache(tmp_path / "shards")
    single = key_statistics(site, single_cache, N, B, seed=3, progress=False)
    save_shards(site, shard_cache, k)
    assert not shard_cache.path(single.spec).exists()  # a shard run writes its shard only
    merged = key_statistics(site, shard_cache, N, B, seed=3, progress=False)
    assert merged.cached and merged.merged_shards == k and merged.spec == single.spec
    assert rel(merged.moment, single.moment) <= 1e-10
    a, b = single_cache.load(single.spec), shard_cache.load(single.spec)
    assert a is not None and b is not None
    assert a.count == b.count and a.count % N == 0
    assert rel(b.sum, a.sum) <= 1e-10 and rel(b.key_sum, a.key_sum) <= 1e-10
    # the same cache file: name, metadata, tensors, dtypes and shapes
    assert shard_cache.path(single.spec).name == single_cache.path(single.spec).name == single.spec.filename()
    assert file_layout(shard_cache.path(single.spec)) == file_layout(single_cache.path(single.spec))
    again = key_statistics(site, shard_cache, N, B, seed=3, progress=False)  # read as cached, not merged again
    assert again.cached and again.merged_shards is None and torch.equal(again.moment, merged.moment)


def test_shard_ranges_are_whole_batches_that_tile_the_samples() -> None:
    for n, b in [(37, 5), (100, 10), (7, 7), (1000, 64)]:
        batches = -(-n // b)
        for k in sorted({1, 2, 3, batches} & set(range(1, batches + 1))):
            ranges = [shard_range(n, b, k, i) for i in range(k)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(r[1] == s[0] for r, s in zip(ranges, ranges[1:], strict=False))
            assert all(r[0] % b == 0 and r[0] < r[1] for r in ranges)


def test_shard_keys_are_the_single_pass_keys() -> None:
    """A shard streams exactly the single pass's batches of its range: the same latents, batch by batch."""
    site = tiny_site()
    whole = collect_key_moment(site, N, B, 3, progress=False)
    parts = [collect_key_moment(site, N, B, 3, progress=False, start=s, stop=e) for s, e in [(0, 15), (15, 35),
                                                                                           (35, 37)]]
    total = SecondMoment(whole.sum.shape[0])
    for p in parts:
        total.merge(p)
    assert total.count == whole.count and rel(total.sum, whole.sum) <= 1e-14
    with pytest.raises(ValueError, match=r"samples \[3, 10\) are not whole batches of 5"):
        collect_key_moment(site, N, B, 3, progress=False, start=3, stop=10)


def test_a_missing_shard_is_an_error_that_lists_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site, cache = tiny_site(), StatsCache(tmp_path)
    save_shards(site, cache, 4, [0, 2])
    with pytest.raises(ShardError, match=r"2 of 4 missing: shard 1 \(samples \[10, 20\)\), 3 \(samples \[30, 37\)\); "
                                         r"compute them \(stats.shards=4 stats.shard=1,3\)"):
        key_statistics(site, cache, N, B, seed=3, progress=False)
    assert shards_cli.main(["merge", str(tmp_path)]) == 2
    assert "error: " in capsys.readouterr().err
    assert not any(p.name.endswith("float64.safetensors") for p in tmp_path.iterdir())  # nothing merged
    save_shards(site, cache, 4, [1, 3])
    assert shards_cli.main(["merge", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("merged 4 shards of tiny_")
    assert key_statistics(site, cache, N, B, seed=3, progress=False).merged_shards is None  # the CLI merged it


def test_a_duplicated_or_overlapping_shard_is_an_error(tmp_path: Path) -> None:
    site, cache = tiny_site(), StatsCache(tmp_path)
    save_shards(site, cache, 2, [0])
    key = key_statistics(site, None, N, B, seed=3, progress=False).spec.key()
    shutil.copy(tmp_path / shard_name(key, 2, 0), tmp_path / shard_name(key, 2, 1))  # a copy under shard 1's name
    with pytest.raises(ShardError, match=r"holds shard 0 of 2 \(samples \[0, 20\)\), not shard 1 of 2: a duplicated"):
        key_statistics(site, cache, N, B, seed=3, progress=False)
    # shard 1 computed at another batch size covers samples shard 0 has too
    save_shard_1 = save_key_shard(site, cache, N, 3, 3, "float64", 2, 1, progress=False)
    assert "saved to" in save_shard_1
    with pytest.raises(ShardError, match=r"overlap: each sample must be in exactly one shard"):
        key_statistics(site, cache, N, B, seed=3, progress=False)


def test_shards_of_other_weights_or_splits_are_refused(tmp_path: Path) -> None:
    site, other = tiny_site(), tiny_site()
    with torch.no_grad():
        other.adapter.model.main[0].weight.add_(0.1)  # upstream of the layer: other keys, another cache key
    cache = StatsCache(tmp_path)
    save_shards(other, cache, 2)
    assert not key_statistics(site, cache, N, B, seed=3, progress=False).cached  # not its shards: a single pass
    with pytest.raises(ShardError, match=r"stats.shards=2: no shard of .* compute them first"):
        key_statistics(site, StatsCache(tmp_path / "empty"), N, B, seed=3, progress=False, shards=2)
    spec, other_spec = (key_statistics(s, None, N, B, seed=3, progress=False).spec for s in (site, other))
    cache.path(spec).unlink()
    for i in range(2):  # renamed to this statistic's cache key
        (tmp_path / shard_name(other_spec.key(), 2, i)).rename(tmp_path / shard_name(spec.key(), 2, i))
    with pytest.raises(ShardError, match=rf"refusing stats shard .*computed for another statistic \(weights_sha256 "
                                         rf"'{other_spec.weights_sha256}' where the statistic has "
                                         rf"'{spec.weights_sha256}'\): its cache key is {other_spec.key()}"):
        key_statistics(site, cache, N, B, seed=3, progress=False)
    for i in range(2):
        (tmp_path / shard_name(spec.key(), 2, i)).unlink()
    save_shards(site, cache, 2)
    save_shards(site, cache, 4, [0])  # a second split of the same statistic
    with pytest.raises(ShardError, match=r"come from several splits \(K = 2, 4\)"):
        key_statistics(site, cache, N, B, seed=3, progress=False)
    assert key_statistics(site, cache, N, B, seed=3, progress=False, shards=2).merged_shards == 2


def check(*overrides: str) -> None:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        check_run_config(compose("config", overrides=["generator=tiny", "stats.num_samples=37",
                                                      "stats.batch_size=5", *overrides]))


@pytest.mark.parametrize(("overrides", "message"), [
    (["stats.shards=0"], "stats.shards must be ≥ 1, got 0"),
    (["stats.shards=-2", "stats.shard=0"], "stats.shards must be ≥ 1, got -2"),
    (["stats.shards=2", "stats.shard=2"], "stats.shard must be in [0, 1], got 2"),
    (["stats.shards=2", "stats.shard=-1"], "stats.shard must be in [0, 1], got -1"),
    (["stats.shards=2", "stats.shard=x"], "stats.shard must be an integer in [0, 1], got 'x'"),
    (["stats.shards=9"], "stats.shards must be in [1, 8], got 9: a shard holds whole batches"),
    (["stats.shard=0"], "stats.shard=0 needs stats.shards"),
    (["stats.shards=2", "stats.shard=0", "stats.cache_dir=null"], "stats.shards=2 needs stats.cache_dir"),
])
def test_bad_shard_settings_are_config_errors_naming_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check(*overrides)
    check("stats.shards=8", "stats.shard=7")


TINY = ["generator=tiny", "edit=tiny_box", f"stats.num_samples={N}", f"stats.batch_size={B}", "progress=false",
        "logger=none", "eval.perceptual=null", "eval.ceiling=false", "strategy=closed_form"]


def rewrite_main(*args: str) -> None:
    """`python -m rewrite <TINY> <args>` in this process; HYDRA_FULL_ERROR=1 raises a job's error. Returning is
    exit status 0."""
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags (-m) before the overrides
    with mock.patch.object(sys, "argv", ["rewrite", *flags, *TINY, *(a for a in args if a not in flags)]), \
            mock.patch.dict(os.environ, {"HYDRA_FULL_ERROR": "1"}):
        rewrite.cli.main()


def test_a_shard_run_saves_its_shard_and_stops_with_exit_0(tmp_path: Path) -> None:
    cache, run = tmp_path / "cache", tmp_path / "run"
    rewrite_main("stats.shards=2", "stats.shard=1", f"stats.cache_dir={cache}", f"hydra.run.dir={run}")
    assert [p.name.split(".shard-")[1] for p in cache.iterdir()] == ["1-of-2.safetensors"]
    assert not any((run / name).exists() for name in ("edit.safetensors", "metrics.json", "config.yaml", "grid.png"))
    log = "".join(p.read_text() for p in run.glob("*.log"))
    assert "stats shard 1 of 2" in log and "saved to" in log and "this run stops here, without an edit" in log
    assert "Shards still missing: 0" in log


def test_a_multirun_over_shards_then_a_run_uses_the_merged_statistics(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    rewrite_main("-m", "stats.shards=2", "stats.shard=0,1", f"stats.cache_dir={cache}",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert sorted(p.name.split(".shard-")[1] for p in cache.iterdir()) == ["0-of-2.safetensors", "1-of-2.safetensors"]
    assert not list((tmp_path / "sweep").rglob("edit.safetensors"))
    rewrite_main(f"stats.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stats_cached"] == 1  # merged from the shards, not computed
    site = tiny_site()
    single = key_statistics(site, StatsCache(tmp_path / "single"), N, B, seed=0, progress=False)
    merged = StatsCache(cache).load(single.spec)
    assert merged is not None and rel(merged.sum / merged.count, single.moment) <= 1e-10
    assert "merged the 2 shards" in "".join(p.read_text() for p in (tmp_path / "run").glob("*.log"))
