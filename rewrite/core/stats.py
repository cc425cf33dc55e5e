"""Key statistics: the uncentered second moment C = E[k kᵀ] of a layer's keys, streamed and cached.

Streaming objects (update / merge / save) so that statistics over many samples never need all keys
(or all latents) in memory; the cache file name carries a hash of the model weights, so a cache computed
for other weights is never reused.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from rewrite.core.checks import integer
from rewrite.core.site import EditSite

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def key_rows(keys: Tensor) -> Tensor:
    """(N, C, H, W) key maps -> (N*H*W, C): one row per spatial position."""
    return keys.permute(0, 2, 3, 1).reshape(-1, keys.shape[1])


class SecondMoment:
    """Running sums of k kᵀ and of k, and the count of keys; `moment` is sum / count.

    `key_sum` (Σ k) is None for a statistic read from a cache file written before it was kept."""

    def __init__(self, dim: int, dtype: torch.dtype = torch.float64) -> None:
        self.sum = torch.zeros(dim, dim, dtype=dtype)
        self.key_sum: Tensor | None = torch.zeros(dim, dtype=dtype)
        self.count = 0

    def update(self, rows: Tensor) -> None:
        r = rows.to(device=self.sum.device, dtype=self.sum.dtype)
        self.sum.addmm_(r.T, r)
        if self.key_sum is not None:
            self.key_sum += r.sum(0)
        self.count += r.shape[0]

    def merge(self, other: SecondMoment) -> None:
        self.sum += other.sum.to(self.sum.dtype)
        if self.key_sum is not None and other.key_sum is not None:
            self.key_sum += other.key_sum.to(self.key_sum.dtype)
        else:
            self.key_sum = None
        self.count += other.count

    @property
    def moment(self) -> Tensor:
        if self.count == 0:
            raise ValueError("no keys were added to this statistic")
        return self.sum / self.count

    def state_dict(self) -> dict[str, Tensor]:
        state = {"sum": self.sum, "count": torch.tensor(self.count, dtype=torch.int64)}
        if self.key_sum is not None:
            state["key_sum"] = self.key_sum
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> SecondMoment:
        s = cls(state["sum"].shape[0], state["sum"].dtype)
        s.sum, s.count = state["sum"].clone(), int(state["count"])
        s.key_sum = state["key_sum"].clone() if "key_sum" in state else None
        return s


RANDN_BLOCK = 16  # torch's CPU randn fills 16 values at a time (Box-Muller on 8 pairs)


def latent_batches(z_shape: tuple[int, ...], num_samples: int, batch_size: int, seed: int,
                   device: torch.device | str = "cpu", first_batch: int = 0) -> Iterator[Tensor]:
    """The latents of `GeneratorAdapter.sample_z_stream(num_samples, seed)`, drawn `batch_size` at a time.

    Why: memory is bounded by the batch, not by `num_samples` (a billion samples start at once and stream).
    The stream is the same one bit for bit, so cached statistics and published results stay valid: CPU
    `randn` fills whole blocks of 16 values from the generator, so pieces of whole blocks continue one
    stream, as long as the last piece holds at least one block (a shorter tail is drawn with the piece before).
    `first_batch` skips the batches before it (drawn, so the rest are the same latents, but not yielded): a
    statistics shard starts there.
    """
    dim = math.prod(z_shape)
    per_block = RANDN_BLOCK // math.gcd(dim, RANDN_BLOCK)  # samples per whole number of blocks
    piece = -(-batch_size // per_block) * per_block
    g = torch.Generator().manual_seed(int(seed))
    drawn, buffer, index = 0, torch.empty(0, *z_shape), 0
    while drawn < num_samples or len(buffer):
        while len(buffer) < batch_size and drawn < num_samples:
            n = min(piece, num_samples - drawn)
            if (num_samples - drawn - n) * dim < RANDN_BLOCK:  # the tail joins this piece
                n = num_samples - drawn
            buffer = torch.cat([buffer, torch.randn((n, *z_shape), generator=g)])
            drawn += n
        if index >= first_batch:
            yield buffer[:batch_size].to(device)
        buffer, index = buffer[batch_size:], index + 1


@torch.no_grad()
def collect_key_moment(site: EditSite, num_samples: int, batch_size: int, seed: int,
                       dtype: torch.dtype = torch.float64, progress: bool = True, start: int = 0,
                       stop: int | None = None) -> SecondMoment:
    """Stream keys of `num_samples` generated images (every position) into a SecondMoment, a batch of latents
    at a time. `start`/`stop` keep samples [start, stop) of those only (a shard): whole batches of the full
    pass (`start` a multiple of `batch_size`, `stop` too or `num_samples`), so each key is computed from the
    same latents in the same batch as in the full pass."""
    integer("stats.num_samples", num_samples, 1)
    integer("stats.batch_size", batch_size, 1)
    stop = num_samples if stop is None else stop
    if not (0 <= start < stop <= num_samples and start % batch_size == 0
            and (stop % batch_size == 0 or stop == num_samples)):
        raise ValueError(f"samples [{start}, {stop}) are not whole batches of {batch_size} of {num_samples} samples")
    stat = SecondMoment(site.key_dim, dtype)
    bad, done = 0, 0  # samples with a NaN/Inf key anywhere; samples seen
    bar = tqdm(total=stop - start, desc=f"key stats {site.layer_name}", unit="img", disable=not progress)
    for zb in latent_batches(site.adapter.z_shape, num_samples, batch_size, seed, site.adapter.device,
                             first_batch=start // batch_size):
        keys = site.capture_keys(zb)
        bad += int((~torch.isfinite(keys)).flatten(1).any(1).sum())
        stat.update(key_rows(keys))
        bar.update(len(zb))
        done += len(zb)
        if done >= stop - start:  # the next batch belongs to the next shard
            break
    bar.close()
    entries = int((~torch.isfinite(stat.sum)).sum())
    if bad or entries:  # a non-finite C would only fail later, far from its cause
        of = f"{stop - start}" if (start, stop) == (0, num_samples) else f"{stop - start} (samples [{start}, {stop}))"
        raise ValueError(f"key statistics of model {site.adapter.name!r} layer {site.layer_name!r} are not finite: "
                         f"{bad} of {of} samples gave NaN/Inf keys, {entries} of {stat.sum.numel()} "
                         f"entries of the sum are NaN/Inf ({stat.sum.dtype})")
    return stat


@dataclass(frozen=True)
class StatsSpec:
    """Everything that determines a statistic; its cache name is built from all of it."""

    model: str
    weights_sha256: str
    layer: str
    num_samples: int
    seed: int
    dtype: str

    def key(self) -> str:
        """The cache key: the cache file's name without `.safetensors` (its shards' names start with it)."""
        return (f"{self.model}-{self.weights_sha256[:16]}-{self.layer}-n{self.num_samples}"
                f"-seed{self.seed}-{self.dtype}")

    def filename(self) -> str:
        return f"{self.key()}.safetensors"

    def metadata(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}


TEMP_PREFIX = ".tmp-"
STALE_TEMP_S = 600.0  # a temporary file untouched this long was left by a killed run (a save takes seconds)


class StatsCache:
    """Directory of cached SecondMoments; writes are atomic (temp file + rename), and temporary files that a
    killed run left behind are removed on the next use."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def path(self, spec: StatsSpec) -> Path:
        return self.root / spec.filename()

    def remove_stale_temp_files(self) -> None:
        """Delete temporary files older than STALE_TEMP_S: a run killed while saving leaves one, and nothing
        else ever would. Younger ones may belong to a run saving right now (runs share a cache), so they stay."""
        now = time.time()
        for tmp in self.root.glob(f"{TEMP_PREFIX}*"):
            try:
                if now - tmp.stat().st_mtime > STALE_TEMP_S:
                    tmp.unlink()
                    log.warning("stats cache: removed %s, a temporary file left by an interrupted run", tmp)
            except FileNotFoundError:  # another run removed it first
                continue

    def load(self, spec: StatsSpec) -> SecondMoment | None:
        self.remove_stale_temp_files()
        path = self.path(spec)
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            if meta != spec.metadata():
                log.warning("ignoring stats cache %s: it was computed for %s", path, meta)
                return None
            stat = SecondMoment.from_state_dict(load_file(str(path)))
        except Exception as e:  # a torn or foreign file is recomputed, never trusted
            log.warning("ignoring unreadable stats cache %s (%s)", path, e)
            return None
        if not torch.isfinite(stat.sum).all():
            bad = "NaN/Inf values"
        elif stat.count < 1 or stat.count % spec.num_samples:
            bad = f"a key count of {stat.count}, which {spec.num_samples} images cannot give"
        else:
            return stat
        log.warning("stats cache %s holds %s; deleting it, it will be recomputed", path, bad)
        path.unlink(missing_ok=True)  # deleted: never read again, even if recomputing fails
        return None

    def save(self, spec: StatsSpec, stat: SecondMoment) -> Path:
        return self.write(spec.filename(), stat.state_dict(), spec.metadata())

    def write(self, name: str, tensors: dict[str, Tensor], metadata: dict[str, str]) -> Path:
        """Write a safetensors file `name` into the cache folder atomically (temp file + rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / name
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=TEMP_PREFIX, suffix=".safetensors")
        os.close(fd)
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path


@dataclass
class KeyStats:
    """C for one site, with where it came from and what it cost."""

    moment: Tensor
    spec: StatsSpec
    cached: bool  # read from the cache folder: the cache file, or merged from its shards
    seconds: float
    merged_shards: int | None = None  # K when this call merged K shards into the cache file


def stats_spec(site: EditSite, num_samples: int, seed: int = 0, dtype: str = "float64") -> StatsSpec:
    """The spec (and so the cache key) of the site's statistic with these settings."""
    if dtype not in DTYPES:
        raise ValueError(f"stats dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return StatsSpec(site.adapter.name, site.adapter.fingerprint(), site.layer_name, num_samples, seed, dtype)


def key_statistics(site: EditSite, cache: StatsCache | None, num_samples: int, batch_size: int = 100,
                   seed: int = 0, dtype: str = "float64", progress: bool = True,
                   shards: int | None = None) -> KeyStats:
    """C for the site: from the cache when its spec (weights hash included) matches, else merged from the
    shards of its cache key in the cache folder (`rewrite.core.shards`; all of them must be there), else computed.

    `shards=K` (`stats.shards` of a run without `stats.shard`) merges only shards of K and requires them: C is
    not silently computed in one pass when the K shards were saved elsewhere.
    """
    t0 = time.perf_counter()
    spec = stats_spec(site, num_samples, seed, dtype)
    stat = cache.load(spec) if cache else None
    cached, merged = stat is not None, None
    if shards is not None and not cache:
        raise ValueError(f"stats.shards={shards} needs stats.cache_dir: the folder the shards were saved to")
    if stat is None and cache:
        from rewrite.core.shards import merge_shards  # shards builds on this module: imported when used

        found = merge_shards(cache, spec, shards)
        if found is not None:
            stat, merged = found
            path = cache.save(spec, stat)
            cached = True
            log.info("stats: merged the %d shards of %s into %s", merged, spec.key(), path)
    if stat is None:
        stat = collect_key_moment(site, num_samples, batch_size, seed, DTYPES[dtype], progress)
        if cache:
            cache.save(spec, stat)
    return KeyStats(stat.moment, spec, cached, time.perf_counter() - t0, merged)
