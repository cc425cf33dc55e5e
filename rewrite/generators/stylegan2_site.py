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

from rewrite.generators.base import GeneratorAdapter
from rewrite.generators.stylegan2 import StyledConv
from rewrite.core.site import Captured, EditSite, StopForward, register_site, run_until


class ModulatedConvSite(EditSite):
    def __init__(self, adapter: GeneratorAdapter, layer: str, value_at: str | None = None) -> None:
        module = adapter.module(layer)
        if not isinstance(module, StyledConv):
            raise TypeError(f"layer {layer!r} is a {type(module).__name__}, not a StyleGAN2 StyledConv")
        if value_at not in (None, layer):
            raise ValueError(f"for a StyleGAN2 layer the value is the StyledConv output itself; "
                             f"value_at must be unset or {layer!r}, got {value_at!r}")
        self.adapter = adapter
        self.layer_name = self.value_at = layer
        self.layer = self.value_module = module
        self.conv = module.conv
        self._tail: list[nn.Module] = []
        self.weight_name = adapter.parameter_name(self.conv, "weight")

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
        store: dict[str, Tensor] = {}

        def hook(_m: nn.Module, args: tuple[Tensor, ...], kwargs: dict, out: Tensor) -> None:
            x, w = args[0], args[1]
            noise = kwargs.get("noise", args[2] if len(args) > 2 else None)
            if noise is None:
                raise RuntimeError(f"{self.layer_name!r} got random noise; rewriting needs fixed noise "
                                   "(call the generator with randomize_noise=False)")
            keys = self.conv.modulated_input(x, w)
            layer_out = self.conv.conv_modulated(keys, self.weight)
            # Cloned now, not after the pass: a later in-place op would overwrite what is stored.
            store.update({k: t.detach().clone() for k, t in
                          dict(x=x, w=w, noise=noise, keys=keys, layer_out=layer_out, value=out).items()})

        handle = self.layer.register_forward_hook(hook, with_kwargs=True)
        try:
            self.adapter.model(z)
        finally:
            handle.remove()
        context = {k: store[k] for k in ("x", "w", "noise")}
        return Captured(store["keys"], store["layer_out"], store["value"], context)

    @torch.no_grad()
    def capture_keys(self, z: Tensor) -> Tensor:
        """Only the style-modulated inputs; the forward pass stops at the layer."""
        store: dict[str, Tensor] = {}

        def pre_hook(_m: nn.Module, args: tuple[Tensor, ...], kwargs: dict) -> None:
            store["keys"] = self.conv.modulated_input(args[0], args[1]).detach().clone()
            raise StopForward

        return run_until(self.adapter.model, z, self.layer.register_forward_pre_hook(pre_hook, with_kwargs=True),
                         store)

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
