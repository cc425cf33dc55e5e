"""Key statistics: streaming equals direct, cache hits, misses when the weights change, atomic files, NaN/Inf."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from rewrite.core.keys import directions
from rewrite.core.site import EditSite
from rewrite.core.stats import (
    STALE_TEMP_S,
    TEMP_PREFIX,
    SecondMoment,
    StatsCache,
    collect_key_moment,
    key_rows,
    key_statistics,
    latent_batches,
)
from rewrite.generators.base import GeneratorAdapter
from rewrite.generators.tiny import load_tiny


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


def test_cache_with_nan_is_deleted_and_recomputed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = StatsCache(tmp_path)
    site = EditSite(load_tiny(), "main.4")
    ref = key_statistics(site, cache, 8, 8, progress=False)
    poisoned = cache.load(ref.spec)
    assert poisoned is not None
    poisoned.sum[0, 1] = float("nan")
    path = cache.save(ref.spec, poisoned)
    with caplog.at_level(logging.WARNING, logger="rewrite.core.stats"):
        assert cache.load(ref.spec) is None
    assert path.name in caplog.text and "recomputed" in caplog.text
    assert not path.exists()
    cache.save(ref.spec, poisoned)
    again = key_statistics(site, cache, 8, 8, progress=False)
    assert not again.cached and torch.equal(again.moment, ref.moment)
    assert key_statistics(site, cache, 8, 8, progress=False).cached  # the fresh statistic replaced the bad file


class BreakSomeSamples(nn.Module):
    """Inf/NaN everywhere in the samples whose first latent entry is ≤ 0 (a generator gone bad)."""

    def forward(self, z: Tensor) -> Tensor:
        return z / (z[:, :1, :1, :1] > 0).to(z.dtype)


def test_nan_keys_are_refused_with_model_layer_and_count(tmp_path: Path) -> None:
    adapter = GeneratorAdapter(nn.Sequential(BreakSomeSamples(), nn.Conv2d(4, 4, 3, 1, 1)), (4, 4, 4), "breaks")
    site = EditSite(adapter, "1")
    bad = int((adapter.sample_z_stream(12, 0)[:, 0, 0, 0] <= 0).sum())
    assert 0 < bad < 12
    with pytest.raises(ValueError, match=rf"'breaks' layer '1'.*{bad} of 12 samples gave NaN/Inf keys"):
        key_statistics(site, StatsCache(tmp_path), 12, 5, progress=False)
    assert not any(tmp_path.iterdir())  # nothing cached


def test_directions_refuse_nan_and_non_positive_definite_statistics() -> None:
    keys = torch.randn(3, 5, dtype=torch.float64)
    c = torch.eye(5, dtype=torch.float64)
    c[2, 3] = float("nan")
    with pytest.raises(ValueError, match="key statistics contain NaN/Inf"):
        directions(keys, c)
    with pytest.raises(ValueError, match="key statistics contain NaN/Inf"):
        directions(torch.full_like(keys, float("inf")), torch.eye(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="not positive definite.*larger ridge") as err:
        directions(keys, -torch.eye(5, dtype=torch.float64))
    assert not isinstance(err.value, torch.linalg.LinAlgError)


@pytest.mark.parametrize(("z_shape", "num_samples", "batch_size"),
                         [((16,), 23, 5), ((3,), 37, 5), ((3,), 6, 4), ((100,), 1000, 7), ((1,), 17, 16),
                          ((4, 1, 1), 10, 3), ((5, 2), 9, 100)])
def test_latent_batches_are_the_seeded_stream_in_batches(z_shape: tuple[int, ...], num_samples: int,
                                                         batch_size: int) -> None:
    """Bit for bit the stream `sample_z_stream` draws at once, so caches and published results stay valid."""
    batches = list(latent_batches(z_shape, num_samples, batch_size, seed=3))
    assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1) and 0 < len(batches[-1]) <= batch_size
    whole = torch.randn((num_samples, *z_shape), generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.cat(batches), whole)


def test_latents_are_drawn_lazily_batch_by_batch() -> None:
    """10^12 latents would be 4 PB at once; drawn a batch at a time the first keys come at once."""
    first = next(latent_batches((16,), 10**12, 8, seed=0))
    assert first.shape == (8, 16)

    class FirstBatch(Exception):
        pass

    def first_batch(z: Tensor) -> Tensor:
        raise FirstBatch(len(z))

    site = EditSite(load_tiny(), "main.4")
    site.capture_keys = first_batch  # type: ignore[method-assign]
    with pytest.raises(FirstBatch, match="^4$"):
        collect_key_moment(site, 10**12, 4, seed=0, progress=False)


def test_cache_with_an_impossible_count_is_deleted_and_recomputed(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    cache = StatsCache(tmp_path)
    site = EditSite(load_tiny(), "main.4")
    ref = key_statistics(site, cache, 8, 8, progress=False)
    stat = cache.load(ref.spec)
    assert stat is not None
    for count in (0, stat.count + 3):  # no keys; not a whole number of positions per image
        stat.count = count
        path = cache.save(ref.spec, stat)
        with caplog.at_level(logging.WARNING, logger="rewrite.core.stats"):
            assert cache.load(ref.spec) is None
        assert f"{path.name} holds a key count of {count}, which 8 images cannot give" in caplog.text
        assert not path.exists()
    again = key_statistics(site, cache, 8, 8, progress=False)
    assert not again.cached and torch.equal(again.moment, ref.moment)


def test_only_stale_temp_files_are_removed(tmp_path: Path) -> None:
    """A killed run's temp file goes on the next use; one younger than STALE_TEMP_S may be another run's save."""
    cache = StatsCache(tmp_path)
    stale, fresh = tmp_path / f"{TEMP_PREFIX}a.safetensors", tmp_path / f"{TEMP_PREFIX}b.safetensors"
    stale.write_bytes(b"")
    fresh.write_bytes(b"")
    os.utime(stale, (time.time() - STALE_TEMP_S - 1,) * 2)
    key_statistics(EditSite(load_tiny(), "main.4"), cache, 8, 8, progress=False)
    assert not stale.exists() and fresh.exists()


def test_latent_batches_from_a_first_batch_are_the_rest_of_the_stream() -> None:
    """A statistics shard starts at a batch of the single pass: the same latents from there on, bit for bit."""
    for z_shape, num_samples, batch_size in [((16,), 23, 5), ((3,), 37, 5), ((3, 2, 2), 9, 4)]:
        whole = list(latent_batches(z_shape, num_samples, batch_size, seed=3))
        for first in range(len(whole) + 1):
            rest = list(latent_batches(z_shape, num_samples, batch_size, seed=3, first_batch=first))
            assert len(rest) == len(whole) - first and all(
                torch.equal(a, b) for a, b in zip(rest, whole[first:], strict=True))


def test_key_sum_is_kept_and_a_cache_without_it_still_loads(tmp_path: Path) -> None:
    """Σk streams, merges and is cached beside Σkkᵀ; a cache file written before it was kept reads as C alone."""
    rows = torch.randn(50, 4, dtype=torch.float64)
    a, b = SecondMoment(4), SecondMoment(4)
    a.update(rows[:20])
    b.update(rows[20:])
    a.merge(b)
    torch.testing.assert_close(a.key_sum, rows.sum(0))
    cache = StatsCache(tmp_path)
    site = EditSite(load_tiny(), "main.4")
    ref = key_statistics(site, cache, 8, 8, progress=False)
    stat = cache.load(ref.spec)
    assert stat is not None and stat.key_sum is not None and stat.key_sum.shape == (site.key_dim,)
    stat.key_sum = None  # the older format: sum and count only
    cache.save(ref.spec, stat)
    again = key_statistics(site, cache, 8, 8, progress=False)
    assert again.cached and torch.equal(again.moment, ref.moment)
