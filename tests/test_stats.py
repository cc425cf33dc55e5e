"""Key statistics: streaming equals direct, cache hits, misses when the weights change, atomic files, NaN/Inf."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from rewrite.core.keys import directions
from rewrite.core.site import EditSite
from rewrite.core.stats import SecondMoment, StatsCache, collect_key_moment, key_rows, key_statistics
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
