"""Key statistics: streaming equals direct, cache hits, misses when the weights change, atomic files."""

from __future__ import annotations

from pathlib import Path

import torch

from rewrite.generators.tiny import load_tiny
from rewrite.site import EditSite
from rewrite.stats import SecondMoment, StatsCache, collect_key_moment, key_rows, key_statistics


def test_streaming_equals_direct_computation() -> None:
    site = EditSite(load_tiny(), "main.7")
    stat = collect_key_moment(site, 23, 5, seed=3, progress=False)
    keys = site.capture(site.adapter.sample_z_stream(23, 3)).keys.double()  # all at once
    rows = keys.permute(0, 2, 3, 1).reshape(-1, keys.shape[1])
    direct = rows.T @ rows / rows.shape[0]
    assert stat.count == 23 * 8 * 8
    torch.testing.assert_close(stat.moment, direct, rtol=1e-5, atol=1e-7)  # float32 keys per batch


def test_merge_of_halves_equals_whole() -> None:
    rows = torch.randn(100, 6, dtype=torch.float64)
    whole, a, b = SecondMoment(6), SecondMoment(6), SecondMoment(6)
    whole.update(rows)
    a.update(rows[:37])
    b.update(rows[37:])
    a.merge(b)
    torch.testing.assert_close(a.moment, whole.moment)
    torch.testing.assert_close(SecondMoment.from_state_dict(a.state_dict()).moment, whole.moment)


def test_key_rows_layout() -> None:
    k = torch.arange(2 * 3 * 2 * 2, dtype=torch.float).reshape(2, 3, 2, 2)
    assert torch.equal(key_rows(k)[1], k[0, :, 0, 1])


def test_cache_hit_then_miss_after_weights_change(tmp_path: Path) -> None:
    cache = StatsCache(tmp_path)
    site = EditSite(load_tiny(), "main.4", "main.6")
    first = key_statistics(site, cache, 16, 8, progress=False)
    second = key_statistics(site, cache, 16, 8, progress=False)
    assert not first.cached and second.cached
    assert torch.equal(first.moment, second.moment)
    assert [p.name for p in tmp_path.iterdir()] == [first.spec.filename()]  # no temp files left
    with torch.no_grad():
        site.adapter.model.main[0].weight.add_(0.1)  # an upstream layer: the keys change
    third = key_statistics(site, cache, 16, 8, progress=False)
    assert not third.cached
    assert third.spec.weights_sha256 != first.spec.weights_sha256
    assert not torch.allclose(third.moment, first.moment)


def test_corrupt_or_foreign_cache_is_recomputed(tmp_path: Path) -> None:
    cache = StatsCache(tmp_path)
    site = EditSite(load_tiny(), "main.4")
    ref = key_statistics(site, cache, 8, 8, progress=False)
    path = cache.path(ref.spec)
    path.write_bytes(b"not a safetensors file")
    again = key_statistics(site, cache, 8, 8, progress=False)
    assert not again.cached and torch.equal(again.moment, ref.moment)
    # A file renamed to this spec's name but computed for another spec is not trusted either.
    other = key_statistics(site, cache, 4, 4, progress=False)
    cache.path(other.spec).replace(path)
    assert not key_statistics(site, cache, 8, 8, progress=False).cached
