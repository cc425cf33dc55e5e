"""Edit site for a StyleGAN2 modulated convolution (`StyledConv`), as in the paper's StyleGAN2 experiments.

Keys are the style-modulated input features x·s (what the shared weight actually sees), the edited
tensor is the conv weight (stored layout (1, out, in, k, k)), and the value is the StyledConv's
output after demodulation, noise, bias and activation. The layer's linear part (used by the closed
form) is the modulated convolution before demodulation. Everything goes through a forward hook on
the generator's own module and its own functional pieces; nothing is copied. Importing this module
registers the site for `StyledConv` layers with `rewrite.core.site.make_site` (`rewrite.generators` does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rewrite.core.site import Captured, EditSite, register_site
from rewrite.core.trace import Trace
from rewrite.generators.stylegan2 import StyledConv


class ModulatedConvSite(EditSite):
    def _check_layer(self, value_at: str | None) -> None:
        layer = self.layer_name
        if not isinstance(self.layer, StyledConv):
            raise TypeError(f"layer {layer!r} is a {type(self.layer).__name__}, not a StyleGAN2 StyledConv")
        if value_at not in (None, layer):
            raise ValueError(f"for a StyleGAN2 layer the value is the StyledConv output itself; "
                             f"value_at must be unset or {layer!r}, got {value_at!r}")
        self.conv = self.layer.conv

    def _resolve_value_at(self, value_at: str | None) -> str:
        return self.layer_name

    @property
    def weight_module(self) -> nn.Module:
        return self.conv

    @property
    def weight(self) -> Tensor:
        return self.conv.weight

    @property
    def in_axis(self) -> int:
        return 2

    @property
    def out_axis(self) -> int:
        return 1

    @property
    def taps(self) -> tuple[int, ...]:
        return tuple(self.weight.shape[3:])

    def to_weight_layout(self, t: Tensor) -> Tensor:
        return t.unsqueeze(0)

    @torch.no_grad()
    def capture(self, z: Tensor) -> Captured:
        def pick(args: tuple[Tensor, ...], kwargs: dict, out: Tensor) -> dict[str, Tensor]:
            x, w = args[0], args[1]
            noise = kwargs.get("noise", args[2] if len(args) > 2 else None)
            if noise is None:
                raise RuntimeError(f"{self.layer_name!r} got random noise; rewriting needs fixed noise "
                                   "(call the generator with randomize_noise=False)")
            keys = self.conv.modulated_input(x, w)
            return dict(x=x, w=w, noise=noise, keys=keys, layer_out=self.conv.conv_modulated(keys, self.weight),
                        value=out)

        with Trace(self.layer, pick) as t:
            self.adapter.model(z)
        return Captured(t["keys"], t["layer_out"], t["value"], {k: t[k] for k in ("x", "w", "noise")})

    @torch.no_grad()
    def capture_keys(self, z: Tensor) -> Tensor:
        """Only the style-modulated inputs; the forward pass stops at the layer."""
        with Trace(self.layer, lambda args, _kw, _out: {"keys": self.conv.modulated_input(args[0], args[1])},
                   before=True, stop=True) as t:
            self.adapter.model(z)
        return t["keys"]

    def layer_forward(self, keys: Tensor, weight: Tensor) -> Tensor:
        return self.conv.conv_modulated(keys, weight)

    def delta_forward(self, proj_keys: Tensor, lam: Tensor) -> Tensor:
        kernel = lam[0] * self.conv.scale  # (out, r, k, k), equalized-lr scale as for the weight
        if self.conv.upsample:
            return self.conv.blur(F.conv_transpose2d(proj_keys, kernel.transpose(0, 1), stride=2, padding=0))
        return F.conv2d(proj_keys, kernel, padding=self.conv.padding)

    def value_forward(self, cap: Captured, weight: Tensor) -> Tensor:
        c = cap.context
        return self.layer(c["x"], c["w"], noise=c["noise"], weight=weight)

    def lowrank_value(self, cap: Captured, proj_keys: Tensor, lam: Tensor, d: Tensor) -> Tensor:
        """Demodulation depends on the whole weight, so the value takes the full W0 + Λ Dᵀ."""
        return self.value_forward(cap, self.weight + self.expand(lam, d))


register_site(StyledConv, ModulatedConvSite)
