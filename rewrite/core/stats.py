"""Key statistics: the uncentered second moment C = E[k kᵀ] of a layer's keys, streamed and cached.

Streaming objects (update / merge / save) so that statistics over many samples never need all keys
in memory; the cache file name carries a hash of the model weights, so a cache computed for other
weights is never reused.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from rewrite.core.site import EditSite

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def key_rows(keys: Tensor) -> Tensor:
    """(N, C, H, W) key maps -> (N*H*W, C): one row per spatial position."""
    return keys.permute(0, 2, 3, 1).reshape(-1, keys.shape[1])


class SecondMoment:
    """Running sum of k kᵀ and count; `moment` is their ratio."""

    def __init__(self, dim: int, dtype: torch.dtype = torch.float64) -> None:
        self.sum = torch.zeros(dim, dim, dtype=dtype)
        self.count = 0

    def update(self, rows: Tensor) -> None:
        r = rows.to(device=self.sum.device, dtype=self.sum.dtype)
        self.sum.addmm_(r.T, r)
        self.count += r.shape[0]

    def merge(self, other: SecondMoment) -> None:
        self.sum += other.sum.to(self.sum.dtype)
        self.count += other.count

    @property
    def moment(self) -> Tensor:
        if self.count == 0:
            raise ValueError("no keys were added to this statistic")
        return self.sum / self.count

    def state_dict(self) -> dict[str, Tensor]:
        return {"sum": self.sum, "count": torch.tensor(self.count, dtype=torch.int64)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> SecondMoment:
        s = cls(state["sum"].shape[0], state["sum"].dtype)
        s.sum, s.count = state["sum"].clone(), int(state["count"])
        return s


@torch.no_grad()
def collect_key_moment(site: EditSite, num_samples: int, batch_size: int, seed: int,
                       dtype: torch.dtype = torch.float64, progress: bool = True) -> SecondMoment:
    """Stream keys of `num_samples` generated images (every position) into a SecondMoment."""
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be positive, got {num_samples}, {batch_size}")
    z = site.adapter.sample_z_stream(num_samples, seed)
    stat = SecondMoment(site.key_dim, dtype)
    bad = 0  # samples with a NaN/Inf key anywhere
    bar = tqdm(total=num_samples, desc=f"key stats {site.layer_name}", unit="img", disable=not progress)
    for i in range(0, num_samples, batch_size):
        zb = z[i : i + batch_size]
        keys = site.capture_keys(zb)
        bad += int((~torch.isfinite(keys)).flatten(1).any(1).sum())
        stat.update(key_rows(keys))
        bar.update(len(zb))
    bar.close()
    entries = int((~torch.isfinite(stat.sum)).sum())
    if bad or entries:  # a non-finite C would only fail later, far from its cause
        raise ValueError(f"key statistics of model {site.adapter.name!r} layer {site.layer_name!r} are not finite: "
                         f"{bad} of {num_samples} samples gave NaN/Inf keys, {entries} of {stat.sum.numel()} "
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

    def filename(self) -> str:
        return (f"{self.model}-{self.weights_sha256[:16]}-{self.layer}-n{self.num_samples}"
                f"-seed{self.seed}-{self.dtype}.safetensors")

    def metadata(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}


class StatsCache:
    """Directory of cached SecondMoments; writes are atomic (temp file + rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def path(self, spec: StatsSpec) -> Path:
        return self.root / spec.filename()

    def load(self, spec: StatsSpec) -> SecondMoment | None:
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
        if not torch.isfinite(stat.sum).all():  # deleted: never read again, even if recomputing fails
            log.warning("stats cache %s holds NaN/Inf values; deleting it, it will be recomputed", path)
            path.unlink(missing_ok=True)
            return None
        return stat

    def save(self, spec: StatsSpec, stat: SecondMoment) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(spec)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".safetensors")
        os.close(fd)
        try:
            save_file({k: v.contiguous() for k, v in stat.state_dict().items()}, tmp, metadata=spec.metadata())
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
    cached: bool
    seconds: float


def key_statistics(site: EditSite, cache: StatsCache | None, num_samples: int, batch_size: int = 100,
                   seed: int = 0, dtype: str = "float64", progress: bool = True) -> KeyStats:
    """C for the site: from the cache when its spec (weights hash included) matches, else computed."""
    if dtype not in DTYPES:
        raise ValueError(f"stats dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    t0 = time.perf_counter()
    spec = StatsSpec(site.adapter.name, site.adapter.fingerprint(), site.layer_name, num_samples, seed, dtype)
    stat = cache.load(spec) if cache else None
    cached = stat is not None
    if stat is None:
        stat = collect_key_moment(site, num_samples, batch_size, seed, DTYPES[dtype], progress)
        if cache:
            cache.save(spec, stat)
    return KeyStats(stat.moment, spec, cached, time.perf_counter() - t0)
