"""Key statistics in shards: K runs each compute one of K disjoint ranges of the statistic's samples and save a
shard file; a merge adds their float64 sums and counts into the cache file a single pass writes.

    python -m rewrite -m stats.shards=4 stats.shard=0,1,2,3 ...   # 4 jobs (on a launcher: side by side, or a
                                                                  # cluster), each saves its shard and stops
    python -m rewrite ...                                         # finds the 4 shards, merges them, edits
    python -m rewrite.core.shards merge CACHE_DIR [--key KEY]     # or the merge alone

Exact: shard I holds whole batches of the single pass, batches [⌊nI/K⌋, ⌊n(I+1)/K⌋) of its n = ⌈N/B⌉ batches
(B = `stats.batch_size`), drawn from the same latent stream (`latent_batches`). So every key a shard sees is the
key the single pass sees, from the same latent in the same batch; only the float64 additions are grouped
differently (the shards' sums start at zero and are added in shard order), which moves C by float64 rounding
(relative ~1e-16), not float32's. Keys computed on other hardware may differ as any recomputation would.

A shard file, `<cache key>.shard-I-of-K.safetensors` beside the cache file, holds the float64 sums of k kᵀ
(`sum`) and of k (`key_sum`), the key count, and in its metadata the statistic's spec (model, weights sha256,
layer, samples, seed, dtype: its cache key), K, I, its samples [start, stop) and the batch size. A merge refuses
shards of another spec, a shard whose content is not the shard its name says (a copy), overlapping ranges and
missing shards (listed), so a merged C is always the statistic of its cache key over exactly its N samples.
Merged shard files are kept (a deleted or damaged cache file is merged again); they can be deleted.
"""

from __future__ import annotations

import argparse
import glob
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from rewrite.core.checks import shard_settings
from rewrite.core.site import EditSite
from rewrite.core.stats import (
    DTYPES,
    SecondMoment,
    StatsCache,
    StatsSpec,
    collect_key_moment,
    stats_spec,
)

log = logging.getLogger(__name__)

FORMAT = "rewrite-stats-shard/1"
SPEC_FIELDS = ("model", "weights_sha256", "layer", "num_samples", "seed", "dtype")
NAME = re.compile(r"^(?P<key>.+)\.shard-(?P<shard>\d+)-of-(?P<shards>\d+)\.safetensors$")


class ShardError(ValueError):
    """Shards that cannot be merged into their statistic: missing, duplicated, overlapping, foreign or unreadable."""


class ShardRunStop(Exception):
    """A shard run (`stats.shard=I`) has saved its shard (or found it unneeded): the run stops before the edit, and
    `rewrite.cli` exits with status 0 and this message."""


def shard_name(key: str, shards: int, shard: int) -> str:
    return f"{key}.shard-{shard}-of-{shards}.safetensors"


def num_batches(num_samples: int, batch_size: int) -> int:
    return -(-num_samples // batch_size)


def shard_range(num_samples: int, batch_size: int, shards: int, shard: int) -> tuple[int, int]:
    """Samples [start, stop) of shard `shard` of `shards`: whole batches of the single pass, as even as can be."""
    shard_settings(num_samples, batch_size, shards, shard)
    n = num_batches(num_samples, batch_size)
    first, last = n * shard // shards, n * (shard + 1) // shards
    return first * batch_size, min(last * batch_size, num_samples)


def _samples(start: int, stop: int) -> str:
    return f"samples [{start}, {stop})"


@dataclass
class Shard:
    """A shard file as read: its statistic (float64 sums), where it lies in the single pass, and what it is of."""

    path: Path
    spec: dict[str, str]  # the statistic's spec (StatsSpec.metadata()) it was computed for
    shards: int
    shard: int
    start: int
    stop: int
    batch_size: int
    stat: SecondMoment

    @property
    def label(self) -> str:
        return f"shard {self.shard} of {self.shards} ({_samples(self.start, self.stop)})"


def save_shard(cache: StatsCache, spec: StatsSpec, stat: SecondMoment, shards: int, shard: int, start: int,
               stop: int, batch_size: int) -> Path:
    """Write one shard file (float64 sums of k kᵀ and of k, the count, and what it is a shard of) atomically."""
    assert stat.sum.dtype == torch.float64 and stat.key_sum is not None
    meta = {**spec.metadata(), "format": FORMAT, "key": spec.key(), "shards": str(shards), "shard": str(shard),
            "start": str(start), "stop": str(stop), "batch_size": str(batch_size)}
    return cache.write(shard_name(spec.key(), shards, shard), stat.state_dict(), meta)


def read_shard(path: Path) -> Shard:
    """A shard file, checked to be whole and self-consistent (finite float64 sums, a count of keys its samples can
    give), or a ShardError naming it."""
    redo = "; delete it and compute its shard again"
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"not a stats shard file (format {meta.get('format')!r}, expected {FORMAT!r})")
        state = load_file(str(path))
        stat = SecondMoment.from_state_dict(state)
        shards, shard, start, stop, batch = (int(meta[k]) for k in ("shards", "shard", "start", "stop", "batch_size"))
        spec = {k: meta[k] for k in SPEC_FIELDS}
    except Exception as e:  # torn, foreign, or missing a field
        raise ShardError(f"unreadable stats shard {path} ({e}){redo}") from None
    sh = Shard(path, spec, shards, shard, start, stop, batch, stat)
    dim = stat.sum.shape[0]
    samples = stop - start
    if (stat.sum.dtype != torch.float64 or stat.sum.shape != (dim, dim) or stat.key_sum is None
            or stat.key_sum.shape != (dim,) or stat.key_sum.dtype != torch.float64):
        raise ShardError(f"stats shard {path} does not hold a float64 sum of k kᵀ and of k{redo}")
    if not (torch.isfinite(stat.sum).all() and torch.isfinite(stat.key_sum).all()):
        raise ShardError(f"stats shard {path} holds NaN/Inf values{redo}")
    if samples < 1 or stat.count < 1 or stat.count % samples:
        raise ShardError(f"stats shard {path} holds a key count of {stat.count}, which {samples} images "
                         f"cannot give{redo}")
    return sh


def _spec_differences(have: dict[str, str], want: dict[str, str]) -> str:
    return ", ".join(f"{k} {have.get(k)!r} where the statistic has {want[k]!r}" for k in SPEC_FIELDS
                     if have.get(k) != want[k])


def check_shard(sh: Shard, spec: StatsSpec, shards: int, shard: int) -> None:
    """The shard file `sh`, found under the name of shard `shard` of `shards` of `spec`'s cache key, is that shard:
    computed for the same spec (weights, layer, samples, seed, dtype) and holding exactly that shard's samples."""
    want = spec.metadata()
    if sh.spec != want:
        other = StatsSpec(**{k: sh.spec[k] for k in SPEC_FIELDS}).key() if all(
            k in sh.spec for k in SPEC_FIELDS) else "?"
        raise ShardError(f"refusing stats shard {sh.path}: it was computed for another statistic "
                         f"({_spec_differences(sh.spec, want)}): its cache key is {other}, not {spec.key()}")
    if (sh.shards, sh.shard) != (shards, shard):
        raise ShardError(f"stats shard file {sh.path.name} holds {sh.label}, not shard {shard} of {shards}: a "
                         f"duplicated (copied or renamed) shard; delete it and compute shard {shard} again "
                         f"(stats.shards={shards} stats.shard={shard})")
    try:
        expected = shard_range(spec.num_samples, sh.batch_size, shards, shard)
    except ValueError as e:
        raise ShardError(f"stats shard {sh.path} is not a shard a run can compute ({e}): delete it") from None
    if (sh.start, sh.stop) != expected:
        raise ShardError(f"stats shard {sh.path} holds {_samples(sh.start, sh.stop)}, but shard {shard} of {shards} "
                         f"at batch size {sh.batch_size} is {_samples(*expected)}: delete it and compute it again")


def shard_files(root: Path, key: str | None = None) -> dict[str, dict[tuple[int, int], Path]]:
    """The shard files in folder `root` (of cache key `key`, or of every key): key -> {(K, I): path}."""
    pattern = f"{glob.escape(key)}.shard-*-of-*.safetensors" if key else "*.shard-*-of-*.safetensors"
    found: dict[str, dict[tuple[int, int], Path]] = {}
    for path in sorted(root.glob(pattern)):
        m = NAME.match(path.name)
        if m and (key is None or m["key"] == key) and path.is_file():
            found.setdefault(m["key"], {})[int(m["shards"]), int(m["shard"])] = path
    return found


def merge_shards(cache: StatsCache, spec: StatsSpec, shards: int | None = None
                 ) -> tuple[SecondMoment, int] | None:
    """The statistic of `spec` merged from its shard files in the cache folder, and K; None when there are none.

    With `shards=K` only shards of K are merged, and they are required (a ShardError when none is there). The
    float64 sums and counts are added in shard order and cast to the spec's dtype. Raises ShardError when a shard
    is missing (naming which), duplicated, overlapping, unreadable or of another statistic.
    """
    key = spec.key()
    files = shard_files(cache.root, key).get(key, {})
    if shards is not None:
        shard_settings(spec.num_samples, 1, shards)  # the batch size is each shard's own: checked per shard
        files = {ki: p for ki, p in files.items() if ki[0] == shards}
        if not files:
            raise ShardError(f"stats.shards={shards}: no shard of {key} in {cache.root}; compute them first "
                             f"(python -m rewrite -m stats.shards={shards} stats.shard=0,…,{shards - 1} ...), or run "
                             "without stats.shards for a single pass")
    if not files:
        return None
    splits = sorted({k for k, _ in files})
    if len(splits) > 1:
        raise ShardError(f"the stats shards of {key} in {cache.root} come from several splits (K = "
                         f"{', '.join(map(str, splits))}): merge one (stats.shards=K, or --shards K) or delete the "
                         "others")
    k = splits[0]
    read = []
    for (_, i), path in sorted(files.items()):
        sh = read_shard(path)
        check_shard(sh, spec, k, i)
        read.append(sh)
    missing = sorted(set(range(k)) - {sh.shard for sh in read})
    if missing:
        ranges = ", ".join(f"{i} ({_samples(*shard_range(spec.num_samples, read[0].batch_size, k, i))})"
                           for i in missing)
        raise ShardError(f"stats shards of {key} in {cache.root}: {len(missing)} of {k} missing: shard "
                         f"{ranges}; compute them (stats.shards={k} stats.shard={','.join(map(str, missing))}) "
                         "before merging")
    read.sort(key=lambda sh: sh.start)
    edge = 0
    for prev, sh in zip([None, *read], read, strict=False):  # (previous shard, shard)
        if sh.start < edge:
            assert prev is not None
            raise ShardError(f"stats shards {prev.path.name} ({prev.label}) and {sh.path.name} ({sh.label}) overlap: "
                             "each sample must be in exactly one shard (were they computed with different "
                             "stats.batch_size?)")
        if sh.start > edge:
            raise ShardError(f"no stats shard of {key} holds {_samples(edge, sh.start)}: shards computed with "
                             "different stats.batch_size do not fit together; compute them all with one")
        edge = sh.stop
    if edge != spec.num_samples:
        raise ShardError(f"no stats shard of {key} holds {_samples(edge, spec.num_samples)}")
    dims = {sh.stat.sum.shape[0] for sh in read}
    per_sample = {sh.stat.count // (sh.stop - sh.start) for sh in read}
    if len(dims) > 1 or len(per_sample) > 1:
        raise ShardError(f"the stats shards of {key} disagree on the key size ({sorted(dims)}) or the keys per "
                         f"image ({sorted(per_sample)}): they are not of one statistic")
    total = SecondMoment(dims.pop(), torch.float64)
    for sh in sorted(read, key=lambda sh: sh.shard):
        total.merge(sh.stat)
    out = SecondMoment(total.sum.shape[0], DTYPES[spec.dtype])
    out.sum, out.count = total.sum.to(out.sum.dtype), total.count
    out.key_sum = total.key_sum.to(out.sum.dtype) if total.key_sum is not None else None
    return out, k


def save_key_shard(site: EditSite, cache: StatsCache, num_samples: int, batch_size: int, seed: int, dtype: str,
                   shards: int, shard: int, progress: bool = True) -> str:
    """Compute shard `shard` of `shards` of the site's statistic and save it to the cache folder (unless it is
    there already, or the whole statistic is); returns the message that says so and what comes next."""
    start, stop = shard_range(num_samples, batch_size, shards, shard)
    spec = stats_spec(site, num_samples, seed, dtype)
    key = spec.key()
    what = f"stats shard {shard} of {shards} of {key} ({_samples(start, stop)} of {num_samples})"
    stops = "this run stops here, without an edit"
    if cache.load(spec) is not None:
        return (f"{what}: not needed, the whole statistic is cached already ({cache.path(spec)}); {stops}")
    path = cache.root / shard_name(key, shards, shard)
    done = False
    if path.is_file():
        try:
            sh = read_shard(path)
            check_shard(sh, spec, shards, shard)
            done = sh.batch_size == batch_size
        except ShardError as e:
            log.warning("%s; computing it again", e)
    if not done:
        stat = collect_key_moment(site, num_samples, batch_size, seed, torch.float64, progress, start, stop)
        path = save_shard(cache, spec, stat, shards, shard, start, stop, batch_size)
    have = {ki[1] for ki in shard_files(cache.root, key).get(key, {}) if ki[0] == shards}
    missing = sorted(set(range(shards)) - have)
    todo = (f"Shards still missing: {', '.join(map(str, missing))}; once all {shards} are saved, "
            if missing else f"All {shards} shards are saved: ")
    return (f"{what} {'was saved already' if done else 'saved'} to {path}; {stops}. {todo}a run without stats.shard "
            f"merges them (or: python -m rewrite.core.shards merge {cache.root} --key {key})")


# --- python -m rewrite.core.shards merge CACHE_DIR [--key KEY] [--shards K] -----------------------------------

def _spec_of(meta: dict[str, str]) -> StatsSpec:
    return StatsSpec(meta["model"], meta["weights_sha256"], meta["layer"], int(meta["num_samples"]),
                     int(meta["seed"]), meta["dtype"])


def merge_key(cache: StatsCache, key: str, shards: int | None = None) -> tuple[Path, int]:
    """Merge the shards of cache key `key` in the cache folder into its cache file; returns its path and K."""
    files = shard_files(cache.root, key).get(key, {})
    if not files:
        raise ShardError(f"no stats shard of {key} in {cache.root}")
    specs = []
    for path in files.values():  # the spec: that of a shard whose content matches its name's key
        try:
            spec = _spec_of(read_shard(path).spec)
        except (ShardError, KeyError, ValueError):
            continue
        if spec.key() == key:
            specs.append(spec)
    if not specs:
        raise ShardError(f"no stats shard of {key} in {cache.root} was computed for that cache key: "
                         f"{', '.join(p.name for p in files.values())}")
    merged = merge_shards(cache, specs[0], shards)
    assert merged is not None
    stat, k = merged
    return cache.save(specs[0], stat), k


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rewrite.core.shards",
                                     description="Merge key-statistics shards (stats.shards=K stats.shard=I runs) "
                                                 "into the cache file a single pass writes.")
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="merge the shards in a statistics cache folder")
    merge.add_argument("cache_dir", type=Path, help="the statistics cache folder (stats.cache_dir)")
    merge.add_argument("--key", help="one cache key (the cache file name without .safetensors); default: every key "
                                     "that has shards there")
    merge.add_argument("--shards", type=int, help="merge only shards of this K")
    args = parser.parse_args(argv)
    cache = StatsCache(args.cache_dir)
    errors = []
    try:
        if not cache.root.is_dir():
            raise ShardError(f"{cache.root} is not a folder")
        keys = [args.key.removesuffix(".safetensors")] if args.key else sorted(shard_files(cache.root))
        if not keys:
            raise ShardError(f"no stats shard files (*.shard-I-of-K.safetensors) in {cache.root}")
        for key in keys:
            try:
                path, k = merge_key(cache, key, args.shards)
                print(f"merged {k} shards of {key} into {path}")
            except ShardError as e:
                errors.append(str(e))
    except ShardError as e:
        errors.append(str(e))
    for e in errors:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
