"""`python -m rewrite` / `rewrite`: compose the Hydra config, edit the model, save pictures and numbers."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor

from rewrite.callbacks import BeforeAfterGrid, EditMetrics
from rewrite.edit_request import EditRequest
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


def toy_scorers(cfg: DictConfig, adapter: GeneratorAdapter, request: EditRequest) -> list[Any]:
    """Ground-truth scoring when the edit is a toy-world rule (`eval.toy_rule`), built before the edit."""
    rule = cfg.eval.get("toy_rule")
    if not rule:
        return []
    from rewrite.toyworld.score import ToyRuleScore, untouched_seeds
    from rewrite.toyworld.segmenter import load_toy_segmenter, segmenter_path

    if not segmenter_path().is_file():
        raise FileNotFoundError(f"toy-world scoring needs the segmenter weights at {segmenter_path()}")
    seeds = list(dict.fromkeys(r.seed for r in request.heldout))  # one score per scene
    start = cfg.eval.toy_untouched_start + cfg.split.heldout_offset
    return [ToyRuleScore(adapter, rule, seeds, untouched_seeds(rule, start, cfg.eval.toy_untouched),
                         load_toy_segmenter(), target_seed=request.paste.seed, tol=cfg.eval.tol,
                         margin=cfg.eval.margin)]


def toy_ideal(cfg: DictConfig) -> Callable[[Tensor], Tensor] | None:
    """For toy-world rules, latents -> the ideal edited images (the grid's last column)."""
    rule = cfg.eval.get("toy_rule")
    if not rule:
        return None
    from rewrite.toyworld.score import ideal_images

    return functools.partial(ideal_images, rule=rule)


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
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
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
    metrics_cb = EditMetrics(out, perceptual, extra, toy_scorers(cfg, adapter, request), cfg.eval.tol,
                             cfg.eval.margin)
    logger = instantiate(cfg.logger) if cfg.get("logger") and cfg.logger.get("_target_") else False
    grid_cb = BeforeAfterGrid(out, toy_ideal(cfg))
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=[metrics_cb, grid_cb],
                                      max_steps=strategy.num_steps, enable_progress_bar=cfg.progress)
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    module = RewriteModule(strategy, problem)
    try:
        trainer.fit(module)
        assert module.result is not None
        save_edit(out, adapter, module.result, base_sha, strategy.name)
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
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
