"""GAN Dissection baseline (Bau et al., ICLR 2019) for erase requests: switch the selected units off for good.

The erase's units (`problem.erase_units`, channels of the value) are ablated by a weight edit: their
output rows of the edited layer's weight, and its bias where it has one, are zeroed, so the layer
outputs 0 for them at every position of every image, not only inside the marked region (that is
what the rank-one family is compared against: a rule, not a global ablation). What the value then
holds for those units is the tail's response to 0, not necessarily 0:

* conv / linear layers with the value at their output: exactly 0;
* values after BatchNorm (+ ReLU), e.g. the DCGAN face model: BN shifts the zero to the constant
  β − γ·μ/σ per unit (ReLU'd), the same at every position; the unit no longer varies, but it is
  not silent unless that constant is ≤ 0;
* StyleGAN2 modulated convs (weight (1, out, in, k, k)): the zeroed rows make the convolution 0
  (demodulation scales a zero), but noise injection, the activation's bias and the leaky ReLU
  still act, so the unit becomes √2·lrelu(noise_strength·noise + bias): noise, not silence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rewrite.core.problem import EditProblem
from rewrite.core.site import as_map
from rewrite.strategies.base import EditResult, Strategy, StrategyConfig


@dataclass
class GanDissectionConfig(StrategyConfig):
    pass  # the units and their number come from the erase request


class GanDissection(Strategy):
    Config = GanDissectionConfig
    name = "gan_dissection"

    def setup(self, problem: EditProblem) -> None:
        if problem.erase_units is None:
            raise ValueError("gan_dissection switches units off: it needs an erase request (kind: erase); "
                             f"request {problem.request.name!r} is a {problem.request.kind} request")
        site = problem.site
        self.out_axis = site.out_axis
        channels = as_map(problem.target.value).shape[1]
        if site.weight.shape[self.out_axis] != channels:
            raise ValueError(f"gan_dissection: the value at {site.value_at!r} has {channels} channels, which are "
                             f"not the output channels of layer {site.layer_name!r}")
        self.problem = problem
        self.weights: dict[str, Tensor] | None = None

    @property
    def num_steps(self) -> int:
        return 1

    @torch.no_grad()
    def step(self, index: int) -> Tensor:
        p = self.prob
        site, units = p.site, p.erase_units
        assert units is not None
        self.weights = {site.weight_name: site.weight.detach().clone().index_fill_(self.out_axis, units, 0)}
        bias = getattr(site.layer, "bias", None)  # a StyledConv has none of its own (its activation's stays)
        if bias is not None:
            self.weights[site.adapter.parameter_name(site.layer, "bias")] = bias.detach().clone().index_fill_(
                0, units, 0)
        with site.adapter.edited(self.weights):
            return p.value_loss(site.capture(p.z_target).value)

    def result(self) -> EditResult:
        if self.weights is None:
            raise RuntimeError("gan_dissection: step() has not run")
        return EditResult(self.weights)
