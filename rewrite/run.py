"""`python -m rewrite` / `rewrite`: compose the Hydra config, edit the model, save pictures and numbers."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from rewrite.callbacks import BeforeAfterGrid, EditMetrics, Scorer
from rewrite.edit_request import EditRequest
from rewrite.files import atomic_write, writable_dir
from rewrite.generators.base import GeneratorAdapter
from rewrite.lightning_module import RewriteModule
from rewrite.outputs import save_edit
from rewrite.perceptual import make_perceptual
from rewrite.problem import EditProblem, build_problem
from rewrite.site import make_site
from rewrite.stats import KeyStats, StatsCache, key_statistics
from rewrite.strategies.base import Strategy

log = logging.getLogger(__name__)
CONF_DIR = str(Path(__file__).resolve().parent / "conf")  # package data: found from any folder, installed or not


def load_request(edit_cfg: DictConfig, heldout_offset: int = 0) -> EditRequest:
    """The edit request: inline in the `edit` config group, from the YAML/JSON file it names, or
    built by the factory its `_target_` names (e.g. the toy world's automatic requests).

    `heldout_offset` (the `split` config group) moves every held-out seed, so settings chosen on one
    split are reported on seeds they were not chosen on; factories take it as their own argument.
    """
    if edit_cfg.get("_target_"):
        request = instantiate(edit_cfg, heldout_offset=heldout_offset)
        if not isinstance(request, EditRequest):
            raise TypeError(f"{edit_cfg._target_} returned {type(request).__name__}, not an EditRequest")
        return request
    data = OmegaConf.to_container(edit_cfg, resolve=True)
    assert isinstance(data, dict)
    if data.get("file"):
        request = EditRequest.load(str(data["file"]))
    else:
        data.pop("file", None)
        request = EditRequest.from_dict(data)
    if heldout_offset:
        moved = tuple(dataclasses.replace(r, seed=r.seed + heldout_offset) for r in request.heldout)
        request = dataclasses.replace(request, heldout=moved)
    return request


def output_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.get("output_dir") or "outputs/run")


def build_scorers(cfg: DictConfig, adapter: GeneratorAdapter, request: EditRequest) -> list[Scorer]:
    """The configured extra scorers (`eval.scorers`: name -> `_target_` config; null entries are off).

    Built before the edit, so each can snapshot the unedited model; every factory gets the adapter,
    the request, the pixel tolerance and margin, and the split's held-out offset.
    """
    scorers = []
    for name, sc in (cfg.eval.get("scorers") or {}).items():
        if sc is None:
            continue
        scorer = instantiate(sc, adapter=adapter, request=request, tol=cfg.eval.tol, margin=cfg.eval.margin,
                             heldout_offset=cfg.split.heldout_offset)
        if not callable(getattr(scorer, "metrics", None)):
            raise TypeError(f"eval.scorers.{name}: {sc._target_} returned {type(scorer).__name__}, "
                            "which has no metrics() method")
        scorers.append(scorer)
    return scorers


def _resolved(node: DictConfig) -> dict[str, Any]:
    data = OmegaConf.to_container(node, resolve=True)
    assert isinstance(data, dict)
    return data


def build_edit(cfg: DictConfig) -> tuple[GeneratorAdapter, EditRequest, KeyStats, EditProblem]:
    """The model, the request, the key statistics and the edit problem a config describes (the run and
    `rewrite.rescore` build them the same way)."""
    adapter: GeneratorAdapter = instantiate(cfg.generator.model)
    site = make_site(adapter, cfg.generator.layer, cfg.generator.get("value_at"))
    request = load_request(cfg.edit, cfg.split.heldout_offset)
    request.validate(adapter.resolution)
    st = cfg.stats
    stats = key_statistics(site, StatsCache(st.cache_dir) if st.cache_dir else None, st.num_samples,
                           st.batch_size, st.seed, st.dtype, progress=cfg.progress)
    return adapter, request, stats, build_problem(site, request, stats.moment)


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
        save_edit(out, adapter, module.result, base_sha, {"name": extra["strategy"], **_resolved(cfg.strategy)},
                  _resolved(cfg.edit), full_weights=cfg.save_full_weights)
        atomic_write(out / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp, resolve=True))
    finally:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()  # one W&B run per multirun job
    log.info("edit %s with %s: %s", request.name, extra["strategy"], metrics_cb.metrics)
    return metrics_cb.metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    _hydra_main()
