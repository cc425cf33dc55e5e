"""The edit site: one layer of a generator seen as a linear associative memory.

Keys are the layer's input features at every spatial position, the edited tensor is the layer's
weight, and the value is read at the layer's output or further on (e.g. after BatchNorm + ReLU).
All of it works through forward hooks and functional calls on the original modules.

Weight layouts: Conv2d (out, in, kh, kw), ConvTranspose2d (in, out, kh, kw), Linear (out, in).
A low-rank delta is `ΔW = Λ Dᵀ` along the input axis: `D` is (in, r) and `Λ` has the weight's
layout with `in` replaced by `r`, so the same direction applies at every kernel tap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rewrite.core.trace import Trace

if TYPE_CHECKING:  # a runtime import would run rewrite.generators, which registers sites here: a circle
    from rewrite.generators.base import GeneratorAdapter


SUPPORTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def as_map(t: Tensor) -> Tensor:
    """(N, C) feature vectors as (N, C, 1, 1) maps, so every layer has 'spatial positions'."""
    return t[:, :, None, None] if t.dim() == 2 else t


@dataclass
class Captured:
    """What one forward pass leaves at the site (all detached)."""

    keys: Tensor  # (N, in, Hk, Wk)
    layer_out: Tensor  # native shape of the layer's output (its linear part)
    value: Tensor  # native shape of the value module's output
    context: dict[str, Tensor] = field(default_factory=dict)  # what else the value needs (e.g. styles, noise)


class EditSite:
    """A layer (by dotted name) of an adapter's model plus where its value is read."""

    def __init__(self, adapter: GeneratorAdapter, layer: str, value_at: str | None = None) -> None:
        self.adapter = adapter
        self.layer_name = layer
        self.layer = adapter.module(layer)
        self._check_layer(value_at)
        self.value_at = self._resolve_value_at(value_at)
        self.value_module = adapter.module(self.value_at)
        self._tail = self._tail_modules()
        self.weight_name = adapter.parameter_name(self.weight_module, "weight")

    def _check_layer(self, value_at: str | None) -> None:
        """Refuse a layer this site cannot edit (a subclass checks its own layer type)."""
        layer = self.layer_name
        if not isinstance(self.layer, SUPPORTED):
            raise TypeError(
                f"layer {layer!r} is a {type(self.layer).__name__}; supported layer types are "
                f"{', '.join(t.__name__ for t in SUPPORTED)}"
            )
        if isinstance(self.layer, (nn.Conv2d, nn.ConvTranspose2d)):
            if self.layer.groups != 1:
                raise TypeError(f"layer {layer!r} has groups={self.layer.groups}; only groups=1 is supported")
            if self.layer.padding_mode != "zeros":
                raise TypeError(f"layer {layer!r} uses padding_mode={self.layer.padding_mode!r}; only 'zeros'")
            if isinstance(self.layer.padding, str):
                raise TypeError(f"layer {layer!r} uses padding={self.layer.padding!r}; give explicit padding")

    def _resolve_value_at(self, value_at: str | None) -> str:
        if value_at and value_at.startswith("+"):
            return _relative_value_at(self.layer_name, value_at)
        return value_at or self.layer_name

    @property
    def weight_module(self) -> nn.Module:
        """The module that owns the edited weight."""
        return self.layer

    # --- structure ----------------------------------------------------------------------
    def _tail_modules(self) -> list[nn.Module]:
        """Modules from just after the layer up to the value module, in one nn.Sequential."""
        if self.value_at == self.layer_name:
            return []
        parent_l, _, idx_l = self.layer_name.rpartition(".")
        parent_v, _, idx_v = self.value_at.rpartition(".")
        parent = self.adapter.module(parent_l) if parent_l else self.adapter.model
        if parent_l != parent_v or not isinstance(parent, nn.Sequential) or not (idx_l.isdigit() and idx_v.isdigit()):
            raise ValueError(
                f"value_at={self.value_at!r} must be a later module of the same nn.Sequential as layer "
                f"{self.layer_name!r} (or equal to it)"
            )
        i, j = int(idx_l), int(idx_v)
        if j <= i:
            raise ValueError(f"value_at={self.value_at!r} comes before layer {self.layer_name!r}")
        return [parent[k] for k in range(i + 1, j + 1)]

    @property
    def weight(self) -> Tensor:
        return self.layer.weight

    @property
    def in_axis(self) -> int:
        """Axis of the weight that indexes input channels (the key dimension)."""
        return 0 if isinstance(self.layer, nn.ConvTranspose2d) else 1

    @property
    def out_axis(self) -> int:
        """Axis of the weight that indexes output channels (the value dimension)."""
        return 1 if isinstance(self.layer, nn.ConvTranspose2d) else 0

    def to_weight_layout(self, t: Tensor) -> Tensor:
        """A tensor laid out (out, r, *taps) -> the weight's own layout (with r in place of `in`)."""
        return t.transpose(0, 1) if isinstance(self.layer, nn.ConvTranspose2d) else t

    @property
    def taps(self) -> tuple[int, ...]:
        """Kernel shape (kh, kw) of a conv; () for a Linear layer."""
        return tuple(self.weight.shape[2:])

    @property
    def key_dim(self) -> int:
        return int(self.weight.shape[self.in_axis])

    # --- capture ------------------------------------------------------------------------
    def _keys(self, args: tuple[Tensor, ...], _kwargs: dict, _out: object = None) -> dict[str, Tensor]:
        k = args[0]
        if isinstance(self.layer, nn.Linear) and k.dim() != 2:
            raise TypeError(f"Linear layer {self.layer_name!r} gets input of shape {tuple(k.shape)}; "
                            "only (N, features) inputs are supported")
        return {"keys": as_map(k)}

    @torch.no_grad()
    def capture(self, z: Tensor) -> Captured:
        """Run the generator once and keep the keys, the layer output and the value."""
        layer = Trace(self.layer, lambda args, kw, out: {**self._keys(args, kw), "layer_out": out})
        value = Trace(self.value_module, lambda _args, _kw, out: {"value": out})
        with layer, value:
            self.adapter.model(z)
        return Captured(layer["keys"], layer["layer_out"], value["value"])

    @torch.no_grad()
    def capture_keys(self, z: Tensor) -> Tensor:
        """Only the keys (N, in, Hk, Wk): the forward pass stops at the layer, so statistics cost a
        forward up to the layer, not through the whole generator."""
        with Trace(self.layer, self._keys, before=True, stop=True) as t:
            self.adapter.model(z)
        return t["keys"]

    # --- functional layer ---------------------------------------------------------------
    def _op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        m = self.layer
        if isinstance(m, nn.Linear):
            return F.linear(x.flatten(1), weight, bias)
        if isinstance(m, nn.Conv2d):
            return F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation)
        assert isinstance(m, nn.ConvTranspose2d)
        return F.conv_transpose2d(x, weight, bias, m.stride, m.padding, m.output_padding, 1, m.dilation)

    def layer_forward(self, keys: Tensor, weight: Tensor) -> Tensor:
        """The layer's output for `keys` with `weight` in place of its own (bias kept)."""
        return self._op(keys, weight, self.layer.bias)

    def delta_forward(self, proj_keys: Tensor, lam: Tensor) -> Tensor:
        """Output change caused by `ΔW = Λ Dᵀ`, from keys already projected on D: (N, r, H, W)."""
        return self._op(proj_keys, lam, None)

    def tail(self, layer_out: Tensor) -> Tensor:
        """Value from the layer output: the modules between the layer and `value_at`."""
        for m in self._tail:
            layer_out = m(layer_out)
        return layer_out

    def value_forward(self, cap: Captured, weight: Tensor) -> Tensor:
        """The value for captured inputs with `weight` in place of the layer's own."""
        return self.tail(self.layer_forward(cap.keys, weight))

    def lowrank_value(self, cap: Captured, proj_keys: Tensor, lam: Tensor, d: Tensor) -> Tensor:
        """The value with W0 + Λ Dᵀ; here through the rank-r path only (the layer is linear in W)."""
        return self.tail(cap.layer_out + self.delta_forward(proj_keys, lam))

    # --- low-rank algebra ---------------------------------------------------------------
    def project_keys(self, keys: Tensor, d: Tensor) -> Tensor:
        """(N, in, H, W) keys -> (N, r, H, W) coordinates along the columns of D."""
        return torch.einsum("nihw,ir->nrhw", keys, d.to(keys.dtype))

    def expand(self, lam: Tensor, d: Tensor) -> Tensor:
        """ΔW = Λ Dᵀ in the weight's own layout."""
        return _along_in(lam, self.in_axis, lambda x: x @ d.to(x.dtype).T)

    def project_weight(self, delta: Tensor, d: Tensor) -> Tensor:
        """Orthogonal projection of ΔW onto {Λ Dᵀ} (D must have orthonormal columns)."""
        dd = d.to(delta.dtype)
        return _along_in(delta, self.in_axis, lambda x: (x @ dd) @ dd.T)

    def coordinates(self, delta: Tensor, d: Tensor) -> Tensor:
        """Λ with ΔW = Λ Dᵀ for a ΔW already in the span (orthonormal D)."""
        return _along_in(delta, self.in_axis, lambda x: x @ d.to(x.dtype))


def _relative_value_at(layer: str, value_at: str) -> str:
    """`+n`: the module n places after the layer in its nn.Sequential (so one setting, e.g. "+2" for
    BatchNorm + ReLU, fits every layer of a DCGAN-style stack and a layer sweep needs no value_at)."""
    parent, _, idx = layer.rpartition(".")
    if not value_at[1:].isdigit() or not idx.isdigit():
        raise ValueError(f"value_at={value_at!r}: a relative value_at is '+n' after a layer of an nn.Sequential")
    return f"{parent}.{int(idx) + int(value_at[1:])}" if parent else str(int(idx) + int(value_at[1:]))


SITE_TYPES: dict[type[nn.Module], Callable[[GeneratorAdapter, str, str | None], EditSite]] = {}
"""Layer type -> the edit site for layers of that type; generator families fill it (`register_site`)."""


def register_site(layer_type: type[nn.Module], site: Callable[[GeneratorAdapter, str, str | None], EditSite]) -> None:
    """Make `make_site` build `site(adapter, layer, value_at)` for layers of `layer_type` (or a subclass).

    Why: a family whose edited layer is not a plain Linear / Conv (StyleGAN2's modulated conv,
    registered by `rewrite.generators.stylegan2_site`) brings its own keys and values without this
    module knowing about it.
    """
    SITE_TYPES[layer_type] = site


def make_site(adapter: GeneratorAdapter, layer: str, value_at: str | None = None) -> EditSite:
    """The site registered for the layer's type (most specific first), else the plain `EditSite`."""
    for cls in type(adapter.module(layer)).__mro__:
        if cls in SITE_TYPES:
            return SITE_TYPES[cls](adapter, layer, value_at)
    return EditSite(adapter, layer, value_at)


def _along_in(t: Tensor, axis: int, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Apply a matrix map on the last axis after moving the input-channel axis there."""
    return fn(t.movedim(axis, -1)).movedim(-1, axis)
