"""Tests of the pure-PyTorch StyleGAN2 generator: reference layout, math, checkpoint loading."""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from rewrite.generators.stylegan2 import (
    ModulatedConv2d,
    StyleGAN2Generator,
    Upsample,
    load_stylegan2_checkpoint,
    upfirdn2d,
)

TINY = {"size": 32, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 2, "channels": {4: 16, 8: 16, 16: 12, 32: 8}}


def tiny_generator(seed: int = 0, **overrides: object) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    g = StyleGAN2Generator(**{**TINY, **overrides})
    # noise strengths start at zero; make them matter so noise handling is actually exercised
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.3)
    return g.eval()


# --- layout against the reference (rosinality stylegan2-pytorch, Generator(256, 512, 8), config-f) ---


def reference_layout(size: int, style_dim: int, n_mlp: int, cm: int) -> list[tuple[str, tuple[int, ...]]]:
    """State-dict entries of the reference Generator, in its order, written out from its structure."""
    ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}
    d = style_dim
    out: list[tuple[str, tuple[int, ...]]] = []
    for i in range(1, n_mlp + 1):  # style.0 is PixelNorm (no parameters)
        out += [(f"style.{i}.weight", (d, d)), (f"style.{i}.bias", (d,))]
    out.append(("input.input", (1, ch[4], 4, 4)))

    def styled(prefix: str, cin: int, cout: int, up: bool) -> list[tuple[str, tuple[int, ...]]]:
        blur = [(f"{prefix}.conv.blur.kernel", (4, 4))] if up else []
        return [
            (f"{prefix}.conv.weight", (1, cout, cin, 3, 3)),
            *blur,
            (f"{prefix}.conv.modulation.weight", (cin, d)),
            (f"{prefix}.conv.modulation.bias", (cin,)),
            (f"{prefix}.noise.weight", (1,)),
            (f"{prefix}.activate.bias", (cout,)),
        ]

    def to_rgb(prefix: str, cin: int, up: bool) -> list[tuple[str, tuple[int, ...]]]:
        upsample = [(f"{prefix}.upsample.kernel", (4, 4))] if up else []
        return [
            (f"{prefix}.bias", (1, 3, 1, 1)),
            *upsample,
            (f"{prefix}.conv.weight", (1, 3, cin, 1, 1)),
            (f"{prefix}.conv.modulation.weight", (cin, d)),
            (f"{prefix}.conv.modulation.bias", (cin,)),
        ]

    out += styled("conv1", ch[4], ch[4], False) + to_rgb("to_rgb1", ch[4], False)
    log_size = int(math.log2(size))
    rgbs = []
    cin = ch[4]
    for j, i in enumerate(range(3, log_size + 1)):
        cout = ch[2**i]
        out += styled(f"convs.{2 * j}", cin, cout, True) + styled(f"convs.{2 * j + 1}", cout, cout, False)
        rgbs += to_rgb(f"to_rgbs.{j}", cout, True)
        cin = cout
    out += rgbs
    for layer in range((log_size - 2) * 2 + 1):
        res = 2 ** ((layer + 5) // 2)
        out.append((f"noises.noise_{layer}", (1, 1, res, res)))
    return out


def test_reference_layout_256_config_f() -> None:
    with torch.device("meta"):
        g = StyleGAN2Generator(256, 512, 8, channel_multiplier=2)
    got = [(k, tuple(v.shape)) for k, v in g.state_dict().items()]
    assert got == reference_layout(256, 512, 8, 2)
    assert len(got) == 135
    assert all(v.dtype == torch.float32 for v in g.state_dict().values())

    # parameter total from the layer formulas (weights + modulation + biases + noise strength)
    d = 512

    def styled(cin: int, cout: int) -> int:
        return cout * cin * 9 + d * cin + cin + 1 + cout

    def to_rgb(cin: int) -> int:
        return 3 * cin + d * cin + cin + 3

    expected = 8 * (d * d + d) + 512 * 16 + styled(512, 512) + to_rgb(512)
    cin = 512
    for cout in (512, 512, 512, 512, 256, 128):  # 8, 16, 32, 64, 128, 256 px
        expected += styled(cin, cout) + styled(cout, cout) + to_rgb(cout)
        cin = cout
    n_params = sum(p.numel() for p in g.parameters())
    assert n_params == expected == 30_034_338

    buffers = dict(g.named_buffers())
    assert sorted(buffers) == sorted(
        [f"noises.noise_{i}" for i in range(13)]
        + [f"convs.{2 * j}.conv.blur.kernel" for j in range(6)]
        + [f"to_rgbs.{j}.upsample.kernel" for j in range(6)]
    )
    spot = {
        "style.8.weight": (512, 512),
        "conv1.conv.weight": (1, 512, 512, 3, 3),
        "convs.8.conv.weight": (1, 256, 512, 3, 3),
        "convs.11.conv.modulation.weight": (128, 512),
        "to_rgbs.5.conv.weight": (1, 3, 128, 1, 1),
        "noises.noise_0": (1, 1, 4, 4),
        "noises.noise_12": (1, 1, 256, 256),
        "convs.0.conv.blur.kernel": (4, 4),
    }
    state = g.state_dict()
    assert {k: tuple(state[k].shape) for k in spot} == spot
    assert (g.n_latent, g.num_layers) == (14, 13)


def test_channel_overrides() -> None:
    with torch.device("meta"):
        scaled = StyleGAN2Generator(64, 64, 2, channels=1 / 16)
        partial = StyleGAN2Generator(64, 64, 2, channels={64: 24})
    assert [scaled.channels[r] for r in (4, 8, 16, 32, 64)] == [32, 32, 32, 32, 32]
    assert partial.channels[64] == 24 and partial.channels[32] == 512
    assert partial.convs[6].conv.weight.shape == (1, 24, 512, 3, 3)
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Generator(48, 8, 1, channels={r: 4 for r in (4, 8, 16, 32)})


# --- forward ---------------------------------------------------------------------------


def test_forward_shape_finite_deterministic() -> None:
    g = tiny_generator()
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = g(z), g([z])
        c = g(z, randomize_noise=True)
    assert a.shape == (3, 3, 32, 32)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)  # fresh noise changes the image once noise strengths are non-zero


def test_truncation_zero_collapses_to_mean() -> None:
    g = tiny_generator()
    w_avg = g.mean_latent(256, seed=0)
    torch.testing.assert_close(w_avg, g.mean_latent(256, seed=0), rtol=0, atol=0)
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        img = g(z, truncation=0.0, truncation_latent=w_avg)
        ref = g(w_avg, input_is_latent=True)
    torch.testing.assert_close(img, ref.expand_as(img))
    with pytest.raises(ValueError, match="truncation_latent"):
        g(z, truncation=0.5)


def test_style_mixing_and_explicit_noise() -> None:
    g = tiny_generator()
    z1, z2 = torch.randn(2, 2, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        img, latent = g([z1, z2], inject_index=3, return_latents=True)
        w1, w2 = g.style(z1), g.style(z2)
        assert latent.shape == (2, g.n_latent, 32)
        torch.testing.assert_close(latent[:, :3], w1[:, None].expand(-1, 3, -1))
        torch.testing.assert_close(latent[:, 3:], w2[:, None].expand(-1, g.n_latent - 3, -1))
        torch.testing.assert_close(g(latent, input_is_latent=True), img)

        buffers = [getattr(g.noises, f"noise_{i}") for i in range(g.num_layers)]
        torch.testing.assert_close(g(z1, noise=buffers), g(z1))
        other = [torch.randn_like(b) for b in buffers]
        assert not torch.allclose(g(z1, noise=other), g(z1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    g = tiny_generator()
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        cpu = g(z, truncation=0.7, truncation_latent=g.mean_latent(64))
        g = g.cuda()
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            gpu = g(z.cuda(), truncation=0.7, truncation_latent=g.mean_latent(64))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)


# --- modulated convolution ---------------------------------------------------------------


def fused_reference(conv: ModulatedConv2d, x: Tensor, w: Tensor, weight: Tensor) -> Tensor:
    """The reference's fused formulation: per-sample modulated/demodulated weights, grouped conv."""
    n, cin, h, wd = x.shape
    cout, k = conv.out_channel, conv.kernel_size
    s = F.linear(w, conv.modulation.weight / math.sqrt(w.shape[1]), conv.modulation.bias)
    wt = weight / math.sqrt(cin * k * k) * s.view(n, 1, cin, 1, 1)
    if conv.demodulate:
        wt = wt * torch.rsqrt(wt.pow(2).sum((2, 3, 4), keepdim=True) + 1e-8)
    xg = x.reshape(1, n * cin, h, wd)
    if not conv.upsample:
        out = F.conv2d(xg, wt.reshape(n * cout, cin, k, k), padding=k // 2, groups=n)
        return out.reshape(n, cout, h, wd)
    out = F.conv_transpose2d(xg, wt.transpose(1, 2).reshape(n * cin, cout, k, k), stride=2, groups=n)
    out = out.reshape(n * cout, 1, *out.shape[-2:])
    blur = torch.tensor([1.0, 3.0, 3.0, 1.0])
    blur = torch.outer(blur, blur) / 64 * 4
    out = F.conv2d(F.pad(out, (1, 1, 1, 1)), blur[None, None])
    return out.reshape(n, cout, *out.shape[-2:])


@pytest.mark.parametrize("upsample", [False, True])
def test_modulated_conv_matches_fused_reference(upsample: bool) -> None:
    torch.manual_seed(4)
    conv = ModulatedConv2d(6, 5, 3, 8, upsample=upsample)
    x, w = torch.randn(3, 6, 7, 7), torch.randn(3, 8)
    out = conv(x, w)
    assert out.shape == ((3, 5, 14, 14) if upsample else (3, 5, 7, 7))
    torch.testing.assert_close(out, fused_reference(conv, x, w, conv.weight), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("upsample", [False, True])
def test_substituted_weight_equals_replaced_parameter(upsample: bool) -> None:
    torch.manual_seed(5)
    conv = ModulatedConv2d(6, 5, 3, 8, upsample=upsample)
    x, w = torch.randn(3, 6, 7, 7), torch.randn(3, 8)
    new_weight = torch.randn_like(conv.weight)
    edited = copy.deepcopy(conv)
    with torch.no_grad():
        edited.weight.copy_(new_weight)
    expected = edited(x, w)
    torch.testing.assert_close(conv.modulated_forward(x, w, new_weight), expected, rtol=0, atol=0)
    torch.testing.assert_close(conv.modulated_forward(x, w, new_weight[0]), expected, rtol=0, atol=0)
    torch.testing.assert_close(expected, fused_reference(conv, x, w, new_weight), rtol=1e-5, atol=1e-5)
    # the key/value decomposition: conv of the keys with the new weight, then demodulation
    keys = conv.modulated_input(x, w)
    d = conv.demodulation(conv.styles(w), new_weight)
    torch.testing.assert_close(conv.conv_modulated(keys, new_weight) * d[:, :, None, None], expected)
    with pytest.raises(ValueError, match="weight must have shape"):
        conv.modulated_forward(x, w, new_weight[..., :2])


def test_demodulation_gives_unit_norm_output_channels() -> None:
    torch.manual_seed(6)
    conv = ModulatedConv2d(6, 5, 3, 8)
    w = torch.randn(4, 8)
    s = conv.styles(w)
    d = conv.demodulation(s, conv.weight)
    # independent: per-sample effective weight c * W * s, normalised per output channel
    eff = conv.weight[0][None] / math.sqrt(6 * 9) * s[:, None, :, None, None]  # (n, out, in, k, k)
    norms = eff.flatten(2).norm(dim=2)
    torch.testing.assert_close(d, 1 / norms)
    demod = eff * d[:, :, None, None, None]
    torch.testing.assert_close(demod.flatten(2).norm(dim=2), torch.ones(4, 5))


def test_hook_points_in_generator() -> None:
    """Keys/values of `convs.1` via a forward hook; recomputation with an edited weight."""
    g = tiny_generator()
    layer = g.convs[1]
    captured: dict[str, object] = {}

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Tensor) -> None:
        captured.update(x=args[0], w=args[1], noise=kwargs.get("noise"), value=output)

    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(7))
    handle = layer.register_forward_hook(hook, with_kwargs=True)
    with torch.no_grad():
        g(z)
    handle.remove()
    x, w, noise = captured["x"], captured["w"], captured["noise"]
    keys = layer.conv.modulated_input(x, w)
    assert keys.shape == x.shape
    new_weight = layer.conv.weight + 0.1 * torch.randn_like(layer.conv.weight)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, w, noise=noise), captured["value"], rtol=0, atol=0)
        value = layer(x, w, noise=noise, weight=new_weight)
        edited = copy.deepcopy(layer)
        edited.conv.weight.copy_(new_weight)
        torch.testing.assert_close(value, edited(x, w, noise=noise), rtol=0, atol=0)


# --- upfirdn2d ---------------------------------------------------------------------------


def numpy_full_conv2d(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Full 2-D convolution with the separable kernel outer(taps, taps), along the last two axes."""
    rows = np.apply_along_axis(np.convolve, -1, x, taps)
    return np.apply_along_axis(np.convolve, -2, rows, taps)


def test_blur_matches_direct_convolution() -> None:
    taps = np.array([1.0, 2.0, 3.0, 4.0])  # asymmetric: also checks the convolution (flip) convention
    taps = taps / taps.sum()
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    kernel = torch.tensor(np.outer(taps, taps))
    full = numpy_full_conv2d(x.numpy(), taps)
    np.testing.assert_allclose(upfirdn2d(x, kernel, pad=(3, 3)).numpy(), full, atol=1e-12)
    np.testing.assert_allclose(upfirdn2d(x, kernel, pad=(1, 2)).numpy(), full[..., 2:-1, 2:-1], atol=1e-12)
    np.testing.assert_allclose(upfirdn2d(x, kernel, down=2, pad=(3, 3)).numpy(), full[..., ::2, ::2], atol=1e-12)


def test_upsample_against_zero_insertion_and_mass() -> None:
    up = Upsample([1, 3, 3, 1])
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    out = up(x)
    assert out.shape == (2, 3, 10, 10)
    stuffed = np.zeros((2, 3, 10, 10))
    stuffed[..., ::2, ::2] = x.numpy()
    taps = np.array([1.0, 3.0, 3.0, 1.0]) / 8 * 2  # 1-D factor of make_kernel * factor**2
    np.testing.assert_allclose(out.numpy(), numpy_full_conv2d(stuffed, taps)[..., 1:11, 1:11], atol=1e-12)

    compact = F.pad(torch.randn(1, 1, 4, 4, dtype=torch.float64), (2, 2, 2, 2))
    torch.testing.assert_close(up(compact).sum(), 4 * compact.sum())  # mass x factor**2 (zero insertion)
    const = up(torch.full((1, 1, 6, 6), 2.0))
    torch.testing.assert_close(const[..., 2:-2, 2:-2], torch.full((1, 1, 8, 8), 2.0))


# --- checkpoints -------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    g = tiny_generator(seed=8)
    latent_avg = torch.randn(32)
    path = tmp_path / "g.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": latent_avg}, path)
    loaded, avg = load_stylegan2_checkpoint(path, 32, 32, 2, 2, channels=TINY["channels"])
    torch.testing.assert_close(avg, latent_avg[None], rtol=0, atol=0)
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), g(z), rtol=0, atol=0)
        torch.testing.assert_close(
            loaded(z, truncation=0.7, truncation_latent=avg), g(z, truncation=0.7, truncation_latent=avg[0])
        )

    bare = tmp_path / "bare.pt"
    torch.save(g.state_dict(), bare)
    loaded, avg = load_stylegan2_checkpoint(bare, 32, 32, 2, 2, channels=TINY["channels"])
    assert avg is None
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), g(z), rtol=0, atol=0)

    # a training checkpoint (argparse args, optimizer state, other key) loads too
    training = tmp_path / "train.pt"
    torch.save({"g": g.state_dict(), "args": argparse.Namespace(size=32, lr=0.002)}, training)
    loaded, avg = load_stylegan2_checkpoint(training, 32, 32, 2, 2, key="g", channels=TINY["channels"])
    assert avg is None


class _NotATensor:
    """A class that must never be unpickled by the loader."""


def test_checkpoint_mismatch_and_unsafe(tmp_path: Path) -> None:
    g = tiny_generator()
    path = tmp_path / "g.pt"
    torch.save({"g_ema": g.state_dict()}, path)
    with pytest.raises(ValueError, match=r"missing keys \(18\): convs.6.conv.weight") as err:
        load_stylegan2_checkpoint(path, 64, 32, 2, 2, channels={**TINY["channels"], 64: 8})
    assert "size=64" in str(err.value)
    with pytest.raises(ValueError, match=r"shape mismatches .*conv1.conv.weight"):
        load_stylegan2_checkpoint(path, 32, 32, 2, 2, channels={**TINY["channels"], 4: 8})
    with pytest.raises(ValueError, match=r"unexpected keys \(18\): convs.4.conv.weight"):
        load_stylegan2_checkpoint(path, 16, 32, 2, 2, channels=TINY["channels"])

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"g_ema": g.state_dict(), "extra": _NotATensor()}, unsafe)
    with pytest.raises(ValueError, match="refusing"):
        load_stylegan2_checkpoint(unsafe, 32, 32, 2, 2, channels=TINY["channels"])
