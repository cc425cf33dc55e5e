"""The naive baseline: fine-tune ALL generator weights so the target image looks like the pasted image.

Loss = perceptual(G(z_t), x*) + l1_weight·|G(z_t) − x*| (+ preserve_weight·same distances between
G(z_i) and the original G0(z_i) on other samples). The perceptual term is LPIPS when its backbone
weights are present, else the named EfficientNet-Lite0 substitute (see `rewrite.core.perceptual`).
The model is evaluated functionally with trained copies of its parameters; it is not modified
until the result is applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call

from rewrite.core.checks import check_range
from rewrite.core.perceptual import LPIPS_CHECKPOINTS, make_perceptual
from rewrite.core.problem import EditProblem
from rewrite.strategies.base import EditResult, Strategy, StrategyConfig


@dataclass
class FullFinetuneConfig(StrategyConfig):
    steps: int = 500
    lr: float = 2e-4
    l1_weight: float = 1.0
    perceptual: str = "auto"  # auto | lpips_alex | lpips_vgg | effnet_lite0
    preserve_weight: float = 0.0  # > 0 adds the preservation term on other samples
    preserve_samples: int = 8
    preserve_seed: int = 1_000_003

    def check(self) -> None:
        check_range("strategy.steps", self.steps, 1)
        check_range("strategy.lr", self.lr, 0, low_open=True)
        check_range("strategy.l1_weight", self.l1_weight, 0)
        check_range("strategy.preserve_weight", self.preserve_weight, 0)
        check_range("strategy.preserve_samples", self.preserve_samples, 1)
        kinds = ["auto", "effnet_lite0", *(f"lpips_{net}" for net in LPIPS_CHECKPOINTS)]
        if self.perceptual not in kinds:  # known now, not after the statistics
            raise ValueError(f"strategy.perceptual must be one of {kinds}, got {self.perceptual!r}")


class FullFinetune(Strategy):
    Config = FullFinetuneConfig
    name = "full_finetune"

    def setup(self, problem: EditProblem) -> None:
        self.problem = problem
        model = problem.site.adapter.model
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
        self.buffers = {k: v.detach() for k, v in model.named_buffers()}
        self.perceptual = make_perceptual(self.cfg.perceptual)
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=self.cfg.lr)
        if self.cfg.preserve_weight > 0:
            adapter = problem.site.adapter
            self.z_keep = adapter.sample_z_stream(self.cfg.preserve_samples, self.cfg.preserve_seed)
            self.x_keep = adapter.generate(self.z_keep)

    @property
    def num_steps(self) -> int:
        return self.cfg.steps

    def generate(self, z: Tensor) -> Tensor:
        return functional_call(self.prob.site.adapter.model, {**self.params, **self.buffers}, (z,))

    def distance(self, x: Tensor, y: Tensor) -> Tensor:
        return self.perceptual(x, y).mean() + self.cfg.l1_weight * (x - y).abs().mean()

    def step(self, index: int) -> Tensor:
        assert self.optimizer is not None
        p = self.prob
        with torch.enable_grad():
            self.optimizer.zero_grad()
            loss = self.distance(self.generate(p.z_target), p.target_image)
            if self.cfg.preserve_weight > 0:
                loss = loss + self.cfg.preserve_weight * self.distance(self.generate(self.z_keep), self.x_keep)
            loss.backward()
            self.optimizer.step()
        return loss.detach()

    def result(self) -> EditResult:
        return EditResult({k: v.detach().clone() for k, v in self.params.items()})
