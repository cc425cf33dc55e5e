"""`python -m rewrite` / `rewrite`: compose the Hydra config, edit the model, save pictures and numbers."""

from __future__ import annotations

import logging
import os
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from rewrite.core.files import atomic_write, writable_dir
from rewrite.core.perceptual import make_perceptual
from rewrite.pipeline import CONF_DIR, build_edit, build_scorers, ceiling_metrics, output_dir, resolved
from rewrite.runner.callbacks import BeforeAfterGrid, EditMetrics
from rewrite.runner.lightning_module import RewriteModule
from rewrite.runner.outputs import save_edit
from rewrite.runner.summary import run_summary
from rewrite.strategies.base import Strategy

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """One edit, end to end; returns the metrics it wrote to metrics.json."""
    out = writable_dir(output_dir(cfg))  # fail now, not after the edit
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))

    strategy: Strategy = instantiate(cfg.strategy)  # config errors surface before any heavy work
    adapter, request, stats, problem = build_edit(cfg)
    base_sha = stats.spec.weights_sha256

    perceptual = make_perceptual(cfg.eval.perceptual) if cfg.eval.perceptual else None
    # The config choice names the run ("low_rank" is the rank_one class with rank 4).
    label = HydraConfig.get().runtime.choices.get("strategy") if HydraConfig.initialized() else strategy.name
    extra = {"stats_time_s": stats.seconds, "stats_cached": int(stats.cached), "strategy": label or strategy.name,
             "split": cfg.split.name}
    extra.update(ceiling_metrics(cfg, adapter, problem, base_sha))  # before the edit: the unedited model
    scorers = build_scorers(cfg, adapter, request)
    metrics_cb = EditMetrics(out, perceptual, extra, scorers, cfg.eval.tol, cfg.eval.margin)
    logger = instantiate(cfg.logger) if cfg.get("logger") and cfg.logger.get("_target_") else False
    grid_cb = BeforeAfterGrid(out, next((sc.ideal for sc in scorers if callable(getattr(sc, "ideal", None))), None))
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=[metrics_cb, grid_cb],
                                      max_steps=strategy.num_steps, enable_progress_bar=cfg.progress)
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    module = RewriteModule(strategy, problem)
    try:
        trainer.fit(module)
        assert module.result is not None
        save_edit(out, adapter, module.result, base_sha, {"name": extra["strategy"], **resolved(cfg.strategy)},
                  resolved(cfg.edit), full_weights=cfg.save_full_weights)
        atomic_write(out / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp, resolve=True))
    finally:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()  # one W&B run per multirun job
    title = f"edit {request.name} with {extra['strategy']} at {cfg.generator.layer} ({cfg.split.name} split)"
    log.info("%s", run_summary(metrics_cb.metrics, out, title))
    return metrics_cb.metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    _hydra_main()
