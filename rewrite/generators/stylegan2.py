"""StyleGAN2 generator in plain PyTorch, state-dict compatible with rosinality's `stylegan2-pytorch`.

Why a re-implementation: the reference port needs JIT-compiled CUDA extensions (`upfirdn2d`,
`fused_bias_act`) that do not build on CPU-only or locked-down machines. Here every op is a
stock torch op (pad, conv2d, conv_transpose2d, leaky_relu), so the same code runs on CPU and
GPU, and the parameter/buffer names and shapes are those of the reference `Generator`, so its
`g_ema` checkpoints load with `strict=True`.

Rewriting hook points (see `ModulatedConv2d`): the editable weight of a synthesis layer is
`convs.{i}.conv.weight` (shape `(1, out, in, k, k)`); its keys are the style-modulated inputs
`ModulatedConv2d.modulated_input(x, w)` and its values the `StyledConv` outputs, which
`StyledConv.forward(x, w, noise, weight=W)` recomputes for a substituted weight `W`.
"""

from __future__ import annotations

import math
import pickle
from argparse import Namespace
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LRELU_SLOPE = 0.2
_LRELU_GAIN = math.sqrt(2.0)  # keeps activation variance ~1 after leaky relu (StyleGAN convention)
_EPS = 1e-8


def default_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """Feature width per resolution of the reference `Generator` (config-f when multiplier is 2)."""
    return {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * channel_multiplier,
        128: 128 * channel_multiplier,
        256: 64 * channel_multiplier,
        512: 32 * channel_multiplier,
        1024: 16 * channel_multiplier,
    }


def make_kernel(taps: Sequence[float]) -> Tensor:
    """Separable FIR taps -> 2-D kernel normalised to sum 1 (so blurring preserves the mean)."""
    k = torch.tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad, convolve with `kernel`, downsample by striding.

    Same semantics as the reference's CUDA op: `pad = (before, after)` is applied on both spatial
    axes (negative values crop) and the kernel is applied as a true convolution (flipped), which
    matters only for asymmetric kernels. The filter runs as a depthwise (grouped) conv, which on
    CPU is an order of magnitude faster than folding channels into the batch.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1)).reshape(n, c, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = kernel.flip((0, 1)).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, weight, stride=down, groups=c)


def fused_leaky_relu(x: Tensor, bias: Tensor) -> Tensor:
    """Per-channel bias (channel axis 1), leaky relu, gain sqrt(2): the reference `fused_bias_act`."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), _LRELU_SLOPE) * _LRELU_GAIN


class PixelNorm(nn.Module):
    """Normalise each latent to unit RMS, so the mapping network sees z on the sphere."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + _EPS)


class FusedLeakyReLU(nn.Module):
    """Bias + leaky relu module; holds the `activate.bias` parameter of the reference layout."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate.

    Weights are stored as N(0, 1) / lr_mul and scaled by lr_mul / sqrt(fan_in) at run time (bias
    by lr_mul), so every layer trains at the same effective speed; the mapping network uses
    lr_mul = 0.01 to slow its updates down.
    """

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}"


class Blur(nn.Module):
    """FIR low-pass filter after a strided transposed conv (anti-aliasing of the upsampling).

    The kernel is a persistent buffer because the reference saves it in its state dict.
    """

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(taps) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling of the RGB skip path.

    The kernel gain factor**2 restores the brightness lost to zero insertion.
    """

    def __init__(self, taps: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(taps) * factor**2)
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Convolution whose input channels are scaled per sample by a style, with demodulation.

    For a sample with style vector w: s = modulation(w) (one scale per input channel), the
    effective weight is W'[o, i] = c * W[o, i] * s[i] with c = 1/sqrt(in * k * k) (equalized lr),
    and demodulation rescales each output channel by d[o] = 1/sqrt(sum_{i,kh,kw} W'^2 + 1e-8), so
    that each output channel has (expected) unit variance.

    Because convolution is linear, conv(x, W') = conv(x * s, c * W): this module computes the
    modulation on the input (not on a per-sample weight copy as the reference's fused path does;
    the results are equal up to float rounding) which exposes the rewriting decomposition:

    * keys: `modulated_input(x, w)` = x * s, the features the shared weight actually sees;
    * the layer: `conv_modulated(x * s, weight)`, linear in `weight` (the stored parameter,
      shape `(1, out, in, k, k)`, unscaled);
    * `demodulation(s, weight)`: the per-sample, per-output-channel factor d, computed from
      the weight actually used.

    An adapter that edits `weight` should capture `(x, w)` with a forward hook on this module (or
    `(x, w, noise)` on the enclosing `StyledConv`: register it with `with_kwargs=True`, the
    generator passes `noise` by keyword) and call `modulated_forward(x, w, new_weight)` (or
    `StyledConv.forward(x, w, noise=noise, weight=new_weight)` for the value after noise, bias and
    activation). Demodulation then uses `new_weight`, so the result equals the output of this
    module with its parameter replaced by `new_weight`. Values are reproducible only with fixed
    noise (the default `randomize_noise=False`, or an explicit `noise` list).
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        if upsample:
            # transposed conv (stride 2) then blur; pads chosen so the output is exactly 2x the input
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channel}, {self.out_channel}, kernel_size={self.kernel_size}, "
            f"upsample={self.upsample}, demodulate={self.demodulate}"
        )

    def _shared_weight(self, weight: Tensor) -> Tensor:
        """Stored-layout weight (1, out, in, k, k) or (out, in, k, k) -> scaled conv2d weight."""
        expected = (self.out_channel, self.in_channel, self.kernel_size, self.kernel_size)
        if tuple(weight.shape) not in (expected, (1, *expected)):
            raise ValueError(f"weight must have shape (1, *{expected}) or {expected}, got {tuple(weight.shape)}")
        return weight.reshape(expected) * self.scale

    def styles(self, w: Tensor) -> Tensor:
        """Per-sample input-channel scales s = modulation(w), shape (N, in_channel)."""
        return self.modulation(w)

    def modulated_input(self, x: Tensor, w: Tensor) -> Tensor:
        """Keys for rewriting: the input scaled by the per-sample style along input channels."""
        return x * self.styles(w)[:, :, None, None]

    def conv_modulated(self, x_mod: Tensor, weight: Tensor) -> Tensor:
        """Convolve already modulated input with `weight` (stored layout), without demodulation."""
        kernel = self._shared_weight(weight)
        if self.upsample:
            out = F.conv_transpose2d(x_mod, kernel.transpose(0, 1), stride=2, padding=0)
            return self.blur(out)
        return F.conv2d(x_mod, kernel, padding=self.padding)

    def demodulation(self, s: Tensor, weight: Tensor) -> Tensor:
        """d[n, o] = 1/||c W[o] * s[n]||: computed as (s^2) @ (sum_k W^2)^T, no per-sample weights."""
        w2 = self._shared_weight(weight).pow(2).sum(dim=(2, 3))  # (out, in)
        return torch.rsqrt(s.pow(2) @ w2.t() + _EPS)

    def modulated_forward(self, x: Tensor, w: Tensor, weight: Tensor) -> Tensor:
        """The layer's output as if its weight parameter were `weight` (used by `forward`)."""
        s = self.styles(w)
        out = self.conv_modulated(x * s[:, :, None, None], weight)
        if self.demodulate:
            out = out * self.demodulation(s, weight)[:, :, None, None]
        return out

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.modulated_forward(x, w, self.weight)


class NoiseInjection(nn.Module):
    """Adds learned-strength per-pixel noise (shared across channels) for stochastic detail."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            n, _, h, w = x.shape
            noise = x.new_empty(n, 1, h, w).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4x4 tensor that replaces a latent input in StyleGAN's synthesis network."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """Modulated 3x3 conv -> noise -> bias + leaky relu: one synthesis layer.

    Its output is the rewriting "value" of the layer `conv.weight`.
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None = None, weight: Tensor | None = None) -> Tensor:
        """`weight` substitutes `conv.weight` (same layout) for this call only; see ModulatedConv2d."""
        out = self.conv.modulated_forward(x, w, self.conv.weight if weight is None else weight)
        return self.activate(self.noise(out, noise))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB, added to the upsampled running image."""

    def __init__(
        self, in_channel: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[float] = (1, 3, 3, 1)
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, w: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, w) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


def _resolve_channels(channel_multiplier: int, channels: Mapping[int, int] | float | None) -> dict[int, int]:
    """Defaults of the reference, overridden per resolution (dict) or scaled by a width multiplier."""
    base = default_channels(channel_multiplier)
    if channels is None:
        return base
    if isinstance(channels, Mapping):
        return {**base, **{int(r): int(c) for r, c in channels.items()}}
    if channels <= 0:
        raise ValueError(f"channel width multiplier must be positive, got {channels}")
    return {r: max(1, round(c * channels)) for r, c in base.items()}


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 generator (mapping + synthesis) with the reference port's state-dict layout.

    `channels` shrinks the model (e.g. `channels=1/16` or `{4: 32, 8: 32, 16: 32, 32: 32}`) for
    CPU training and tests; with `channels=None` the widths are those of the reference.
    """

    def __init__(
        self,
        size: int,
        style_dim: int,
        n_mlp: int,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        lr_mlp: float = 0.01,
        channels: Mapping[int, int] | float | None = None,
    ) -> None:
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"size must be a power of two >= 4, got {size}")
        self.size = size
        self.style_dim = style_dim
        self.channels = _resolve_channels(channel_multiplier, channels)
        missing = [2**i for i in range(2, size.bit_length()) if 2**i not in self.channels]
        if missing:
            raise ValueError(f"no channel width given for resolutions {missing}")
        self.log_size = size.bit_length() - 1
        self.rgb_from = 4  # smallest resolution whose RGB output is added to the image (a subclass may raise it)
        self.num_layers = (self.log_size - 2) * 2 + 1  # one conv at 4x4, two per higher resolution
        self.n_latent = self.log_size * 2 - 2  # one w per conv and per to_rgb, shared pairwise

        self.style = nn.Sequential(
            PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)]
        )

        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        self.conv1 = StyledConv(c4, c4, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channel = c4
        for i in range(3, self.log_size + 1):
            out_channel = self.channels[2**i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, blur_kernel=blur_kernel))
            in_channel = out_channel

        # fixed noise images make outputs deterministic when randomize_noise=False
        self.noises = nn.Module()
        for layer in range(self.num_layers):
            res = 2 ** ((layer + 5) // 2)
            self.noises.register_buffer(f"noise_{layer}", torch.randn(1, 1, res, res))

    @torch.no_grad()
    def mean_latent(self, n_latent: int, seed: int = 0) -> Tensor:
        """Mean of w over `n_latent` seeded z (the truncation centre when a checkpoint lacks one).

        z is drawn on the CPU from its own generator so the result depends on the seed only.
        """
        z = torch.randn(n_latent, self.style_dim, generator=torch.Generator().manual_seed(seed))
        return self.style(z.to(self.input.input.device)).mean(0, keepdim=True)

    def forward(
        self,
        styles: Sequence[Tensor] | Tensor,
        return_latents: bool = False,
        inject_index: int | None = None,
        truncation: float = 1.0,
        truncation_latent: Tensor | None = None,
        input_is_latent: bool = False,
        noise: Sequence[Tensor | None] | None = None,
        randomize_noise: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Images (N, 3, size, size), roughly in [-1, 1]; also the W+ latents if `return_latents`.

        `styles` is z (or w with `input_is_latent`), or a list of one or two such tensors (two:
        style mixing at `inject_index`, random if None). A (N, n_latent, style_dim) tensor is a
        W+ latent. `noise` gives one tensor (or None for fresh noise) per layer; otherwise the
        stored buffers are used, or fresh noise everywhere with `randomize_noise=True`.
        Unlike the reference, the image alone is returned unless `return_latents` is set.
        """
        latent = self.latents(styles, inject_index, truncation, truncation_latent, input_is_latent)
        image = self.synthesis(latent, noise, randomize_noise)
        return (image, latent) if return_latents else image

    def latents(
        self,
        styles: Sequence[Tensor] | Tensor,
        inject_index: int | None = None,
        truncation: float = 1.0,
        truncation_latent: Tensor | None = None,
        input_is_latent: bool = False,
    ) -> Tensor:
        """The W+ latent (N, n_latent, style_dim) that `forward` draws; its arguments mean what they mean there."""
        styles = [styles] if isinstance(styles, Tensor) else list(styles)
        if not 1 <= len(styles) <= 2:
            raise ValueError(f"expected one or two style tensors, got {len(styles)}")
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. latent_avg or mean_latent())")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]

        if len(styles) == 1:
            s = styles[0]
            latent = s if s.ndim == 3 else s.unsqueeze(1).expand(-1, self.n_latent, -1)
        else:
            if inject_index is None:
                inject_index = int(torch.randint(1, self.n_latent, ()))
            first = styles[0].unsqueeze(1).expand(-1, inject_index, -1)
            second = styles[1].unsqueeze(1).expand(-1, self.n_latent - inject_index, -1)
            latent = torch.cat([first, second], dim=1)
        if latent.shape[1] != self.n_latent:
            raise ValueError(f"W+ latent must have {self.n_latent} entries, got {latent.shape[1]}")
        return latent

    def synthesis(self, latent: Tensor, noise: Sequence[Tensor | None] | None = None,
                  randomize_noise: bool = False) -> Tensor:
        """The image drawn from a W+ latent; RGB skips start at resolution `rgb_from` (4: all, as the reference)."""
        if noise is None:
            if randomize_noise:
                noise = [None] * self.num_layers
            else:
                noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        elif len(noise) != self.num_layers:
            raise ValueError(f"noise must have {self.num_layers} entries, got {len(noise)}")

        out = self.conv1(self.input(latent.shape[0]), latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1]) if self.rgb_from <= 4 else None
        for j, to_rgb in enumerate(self.to_rgbs):
            i = 2 * j + 1  # index of this resolution's first conv in the latent and noise lists
            out = self.convs[2 * j](out, latent[:, i], noise=noise[i])
            out = self.convs[2 * j + 1](out, latent[:, i + 1], noise=noise[i + 1])
            if 2 ** (j + 3) >= self.rgb_from:
                skip = to_rgb(out, latent[:, i + 2], skip)
        return skip


def _describe_keys(label: str, keys: Sequence[str], limit: int = 10) -> str:
    """'label (count): first keys, ... and N more': readable errors even for a wholly wrong file."""
    shown = ", ".join(keys[:limit])
    more = f", ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{label} ({len(keys)}): {shown}{more}"


def load_stylegan2_checkpoint(
    path: str | Path,
    size: int,
    style_dim: int,
    n_mlp: int,
    channel_multiplier: int = 2,
    key: str = "g_ema",
    channels: Mapping[int, int] | float | None = None,
    lr_mlp: float = 0.01,
) -> tuple[StyleGAN2Generator, Tensor | None]:
    """Build a generator and load a checkpoint of the reference ecosystem into it (strictly).

    Accepts `{key: state_dict, 'latent_avg': ...}` (converted and training checkpoints) or a bare
    state dict (whose optional 'latent_avg' entry is taken out). Loading uses
    `weights_only=True`, so no code in the file can run; argparse Namespaces (the `args` entry
    of training checkpoints) are the only non-tensor class allowed. Returns the generator in
    eval mode on the CPU and latent_avg as (1, style_dim), or None when the file has none.
    """
    try:
        with torch.serialization.safe_globals([Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refusing to load a checkpoint with non-tensor objects ({err})") from err
    if not isinstance(ckpt, Mapping):
        raise TypeError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")

    latent_avg = ckpt.get("latent_avg")
    if key in ckpt:
        state = dict(ckpt[key])
    elif all(isinstance(v, Tensor) for v in ckpt.values()):
        state = {k: v for k, v in ckpt.items() if k != "latent_avg"}
    else:
        raise ValueError(f"{path}: no {key!r} entry and not a bare state dict (top-level keys: {sorted(ckpt)[:10]})")

    generator = StyleGAN2Generator(size, style_dim, n_mlp, channel_multiplier=channel_multiplier, channels=channels,
                                   lr_mlp=lr_mlp)
    expected = generator.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        problems = [
            _describe_keys(label, keys)
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong))
            if keys
        ]
        raise ValueError(
            f"{path}: checkpoint does not match StyleGAN2Generator(size={size}, style_dim={style_dim}, "
            f"n_mlp={n_mlp}, channel_multiplier={channel_multiplier}); " + "; ".join(problems)
        )
    generator.load_state_dict(state, strict=True)

    if latent_avg is not None:
        if not isinstance(latent_avg, Tensor) or latent_avg.numel() != style_dim:
            raise ValueError(f"{path}: latent_avg must be a tensor with {style_dim} elements")
        latent_avg = latent_avg.detach().float().reshape(1, style_dim)
    return generator.eval(), latent_avg
