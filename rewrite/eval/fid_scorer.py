"""FID and KID of the edited model against the unedited one, as a run's scorer (`eval.fid`).

Built before the edit (`rewrite.pipeline.build_scorers` when `eval.fid.samples` > 0): it renders the unedited
model's N samples of seeds `seed … seed + N − 1` and keeps their Inception features; `metrics()` after the edit
renders the same seeds with the edited weights and compares (`rewrite.eval.fid.fid_kid`: paired samples, so an
edit that changes nothing scores FID 0). The unedited features are kept for the process under everything they
depend on (the weights' hash, the generator, the seeds, N, the image size), so the jobs of a multirun that share
the unedited model compute them once; changed weights are a new key.

Images are generated `batch_size` at a time and turned into features batch by batch, so N only costs
N × 2048 floats of memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from rewrite.core.request import EditRequest
from rewrite.eval.fid import InceptionFeatures, fid_kid, shared_extractor, unedited_features
from rewrite.generators.base import GeneratorAdapter

FID_SEED = 3_000_000
"""First seed of the FID samples by default: apart from every seed an edit uses (requests pick scenes among small
seeds, toy held-out scenes start at 1,000,000 and the toy untouched scenes at 2,000,000; the test split adds
5,000,000 to both), so the samples FID is measured on are neither what the edit was fitted to nor scored on."""


def request_seeds(request: EditRequest) -> set[int]:
    """Every seed a request names: copy, paste, context, contrast and held-out regions."""
    regions = [request.copy, request.paste, *request.context, *request.contrast, *request.heldout]
    return {r.seed for r in regions if r is not None}


class FidScorer:
    """FID / KID between N unedited and N edited samples of the same seeds (see the module docstring).

    `model_key` names what beyond the weights decides the images (e.g. the resolved generator config, which
    holds a StyleGAN2's truncation); it joins the cache key. With `request`, a seed range that overlaps the
    edit's own seeds is refused. With `cache_dir`, the unedited features are also kept on disk there.
    """

    def __init__(self, adapter: GeneratorAdapter, samples: int, seed: int = FID_SEED, batch_size: int = 32,
                 kid_subsets: int = 100, kid_subset_size: int = 100, request: EditRequest | None = None,
                 model_key: str | None = None, progress: bool = False,
                 extractor: InceptionFeatures | None = None, cache_dir: str | None = None) -> None:
        if samples < 2:
            raise ValueError(f"FID needs at least 2 samples, got {samples}")
        self.adapter, self.progress = adapter, progress
        self.seeds = range(seed, seed + samples)
        if request is not None:
            shared = sorted(s for s in request_seeds(request) if s in self.seeds)
            if shared:
                raise ValueError(f"eval.fid.seed: the FID seeds {seed}…{seed + samples - 1} include the edit's own "
                                 f"seeds {shared[:5]}{'…' if len(shared) > 5 else ''}; choose another eval.fid.seed")
        self.batch_size, self.kid_subsets, self.kid_subset_size = batch_size, kid_subsets, kid_subset_size
        self.extractor = extractor or shared_extractor(str(adapter.device))
        key = ("unedited", adapter.fingerprint(), adapter.name, adapter.z_shape, model_key, seed, samples,
               adapter.resolution)
        self.unedited = unedited_features(key, lambda: self._images("unedited"), self.extractor, cache_dir)

    def _images(self, which: str) -> Iterator[Tensor]:
        """The samples' images, `batch_size` at a time (a bar per image when progress is on)."""
        with tqdm(total=len(self.seeds), desc=f"FID features ({which})", unit="img",
                  disable=not self.progress) as bar:
            for start in range(0, len(self.seeds), self.batch_size):
                seeds: Sequence[int] = self.seeds[start : start + self.batch_size]
                with torch.no_grad():
                    images = self.adapter.generate(self.adapter.sample_z(seeds), self.batch_size)
                yield images
                bar.update(len(seeds))

    def metrics(self) -> dict[str, float | int | str]:
        """`fid`, `kid_mean`, `kid_std`, `fid_features` (the backbone) and `fid_samples` (N) of the model as
        it is now (after the edit) against the unedited snapshot."""
        return fid_kid(self.unedited, self._images("edited"), self.extractor, self.kid_subsets,
                       self.kid_subset_size)
