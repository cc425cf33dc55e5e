"""Callbacks that turn a finished edit into numbers and pictures, in the run folder and the logger; the
metrics.json writer."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor

from rewrite.core.files import atomic_write
from rewrite.eval.evaluate import Evaluator
from rewrite.eval.grid import before_after_grid
from rewrite.eval.scorer import Scorer
from rewrite.runner.lightning_module import RewriteModule
from rewrite.runner.runfolder import METRICS_FILE, RUN_OVERRIDES


class EditMetrics(pl.Callback):
    """After the edit, compute the metrics (the evaluator and the scorers snapshot the unedited model when they
    are built, before the edit) and log them.

    The run writes them to metrics.json (`write_metrics`) only after its other files: metrics.json is the last
    file of a run folder, so its presence means the run finished (`rewrite.runner.runfolder.read_run`).
    """

    def __init__(self, evaluator: Evaluator, extra: dict[str, float | int | str] | None = None,
                 scorers: list[Scorer] | None = None) -> None:
        self.evaluator = evaluator
        self.extra = dict(extra or {})
        self.scorers = list(scorers or [])
        self.metrics: dict[str, float | int | str] = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, RewriteModule)
        if pl_module.result is None:
            raise RuntimeError("the edit did not finish (no result after the last step)")
        m: dict[str, float | int | str] = dict(self.evaluator.metrics(pl_module.result))
        for scorer in self.scorers:
            m.update(scorer.metrics())
        m["edit_time_s"] = pl_module.edit_seconds
        m.update(self.extra)
        self.metrics = m
        numeric = {f"metrics/{k}": float(v) for k, v in m.items() if isinstance(v, (int, float)) and v == v}
        for logger in trainer.loggers:
            logger.log_metrics(numeric, step=trainer.global_step)


def write_metrics(out_dir: Path, metrics: Mapping[str, object], overrides: list[str] | None) -> Path:
    """metrics.json, atomically, with the overrides the metrics were made with (`RUN_OVERRIDES`; None outside
    Hydra): a reader can tell them from metrics an earlier run left beside a re-run's new overrides."""
    data = {**metrics, RUN_OVERRIDES: overrides}
    return atomic_write(out_dir / METRICS_FILE, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True)))


class BeforeAfterGrid(pl.Callback):
    """grid.png: source with the copy box, the target and (the first) held-out seeds before / after / difference.

    `ideal` (toy world) maps the rows' latents to the exactly known edited images, shown as a last column.
    """

    def __init__(self, out_dir: str | Path, ideal: Callable[[Tensor], Tensor] | None = None,
                 heldout_rows: int = 8) -> None:
        self.out_dir = Path(out_dir)
        self.ideal = ideal
        self.heldout_rows = heldout_rows

    @torch.no_grad()
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, RewriteModule)
        p = pl_module.problem
        adapter, req = p.site.adapter, p.request
        self.regions = [req.paste] + list(req.heldout)[: self.heldout_rows]
        self.seeds = [r.seed for r in self.regions]
        self.before = adapter.generate(adapter.sample_z(self.seeds))
        self.source = adapter.generate(adapter.sample_z([req.copy.seed]))[0] if req.copy is not None else None

    @torch.no_grad()
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, RewriteModule)
        p = pl_module.problem
        adapter = p.site.adapter
        after = adapter.generate(adapter.sample_z(self.seeds))
        rows = [(self.source if i == 0 else None, p.request.copy if i == 0 else None, b, a, r)
                for i, (b, a, r) in enumerate(zip(self.before, after, self.regions, strict=True))]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "grid.png"
        ideal = self.ideal(adapter.sample_z(self.seeds)) if self.ideal is not None else None
        before_after_grid(rows, p.size, path, ideal=ideal)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                caption = "source | before | after | 4x|diff|" + (" | ideal" if ideal is not None else "")
                logger.log_image(key="before_after", images=[str(path)], caption=[caption])
