"""The LightningModule: a Trainer drives any strategy one `step()` per training step.

Manual optimisation, because strategies own their optimisers (L-BFGS closures, periodic
projections, a closed form with no optimiser at all). The edit is applied to the wrapped generator
after the last step, before the callbacks' `on_train_end` draw pictures and compute metrics.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from rewrite.core.problem import EditProblem
from rewrite.strategies.base import EditResult, Strategy


class RewriteModule(pl.LightningModule):
    def __init__(self, strategy: Strategy, problem: EditProblem) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.strategy = strategy
        self.problem = problem
        self.result: EditResult | None = None
        self.edit_seconds = 0.0
        self._t0 = 0.0

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.strategy.problem is None:
            self._t0 = time.perf_counter()
            self.strategy.setup(self.problem)
            self.edit_seconds = time.perf_counter() - self._t0

    def configure_optimizers(self) -> torch.optim.Optimizer | None:
        return self.strategy.optimizer

    def train_dataloader(self) -> DataLoader:
        # One item per strategy step; the data lives in the problem, the index drives schedules.
        return DataLoader(list(range(self.strategy.num_steps)), batch_size=None, shuffle=False)

    def on_train_start(self) -> None:
        self._t0 = time.perf_counter()

    def training_step(self, batch: int, batch_idx: int) -> None:
        loss = self.strategy.step(batch_idx)
        self.strategy.check_loss(batch_idx, loss)  # a diverged fit stops here: no metrics, no edit file
        self.log("edit/loss", float(loss), prog_bar=True, on_step=True, batch_size=1)
        if batch_idx + 1 == self.strategy.num_steps:
            self.result = self.strategy.checked_result()
            self.problem.site.adapter.load_weights(self.result.weights)
            self.edit_seconds += time.perf_counter() - self._t0
