"""`python -m rewrite` / `rewrite`: compose the Hydra config, edit the model, save pictures and numbers."""

from __future__ import annotations

import glob
import logging
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from rewrite.core.files import atomic_write, check_writable_dir, writable_dir
from rewrite.core.perceptual import make_perceptual
from rewrite.core.shards import ShardRunStop
from rewrite.core.shared import counts as shared_counts
from rewrite.core.shared import key_of, store
from rewrite.eval.evaluate import Evaluator
from rewrite.pipeline import CONF_DIR, build_edit, build_scorers, ceiling_metrics, output_dir, problem_key, resolved
from rewrite.runner.callbacks import BeforeAfterGrid, EditMetrics, write_metrics
from rewrite.runner.lightning_module import RewriteModule
from rewrite.runner.outputs import EDIT_FILE, FULL_WEIGHTS_FILE, save_edit
from rewrite.runner.runfolder import HISTORY_DIR, METRICS_FILE
from rewrite.runner.summary import run_summary
from rewrite.runner.threads import threads_per_job
from rewrite.strategies.base import Strategy

log = logging.getLogger(__name__)


EVALUATORS = store("evaluators", 8)  # snapshots of the unedited model, shared by the jobs of a multirun
RUN_OUTPUTS = (METRICS_FILE, EDIT_FILE, FULL_WEIGHTS_FILE, "config.yaml", "grid.png")  # metrics.json first


def start_clean(out: Path) -> None:
    """Remove what an earlier run left in the run folder before this run writes anything there: its outputs, the
    temporary files of its atomic writes (`.<name>.*.tmp*`, left by a kill) and its metrics history.

    Why: a re-run into an existing folder (a fixed `hydra.run.dir`, a resumed benchmark) replaces that run; Hydra
    has already rewritten `.hydra/` for it, so the old files would read as this run's. metrics.json goes first, so
    the folder reads as incomplete from the first removal until the new metrics.json, the run's last file, is
    written. Logs, `csv/` and `wandb/` are left alone.
    """
    old = [p for name in RUN_OUTPUTS for p in (out / name, *out.glob(f".{glob.escape(name)}.*.tmp*")) if p.is_file()]
    history = out / HISTORY_DIR
    if history.is_dir():
        old.append(history)
    if not old:
        return
    log.warning("%s: a previous run's files are here; removing them before this run writes its own: %s", out,
                ", ".join(p.name for p in old))
    for p in old:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def launcher_config() -> dict[str, Any] | None:
    """The Hydra launcher of this job (None outside Hydra), to share the cores between jobs side by side."""
    if not HydraConfig.initialized():
        return None
    return OmegaConf.to_container(HydraConfig.get().launcher, resolve=True)  # type: ignore[return-value]


def task_overrides() -> list[str] | None:
    """The command line's overrides of this job (`.hydra/overrides.yaml`); None outside a Hydra run."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def run(cfg: DictConfig) -> dict[str, Any]:
    """One edit, end to end; returns the metrics it wrote to metrics.json.

    The run folder is complete or absent: an earlier run's files are removed just before this run writes (after
    every check and the statistics, so a re-run refused for a bad setting leaves the earlier run as it was, read as
    stale by `read_run`), and metrics.json is written last: grid.png, edit.safetensors, config.yaml, metrics.json.
    A shard run (`stats.shard=I`) saves its statistics shard, logs that it stops there and returns {} (no edit).
    """
    out = writable_dir(output_dir(cfg))  # fail now, not after the edit
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    threads = threads_per_job(launcher_config(), cfg.get("torch_threads"))
    if threads:
        torch.set_num_threads(threads)

    strategy: Strategy = instantiate(cfg.strategy)  # config errors surface before any heavy work
    hits_before = {name: hits for name, (hits, _) in shared_counts().items()}
    try:
        adapter, request, stats, problem = build_edit(cfg)
    except ShardRunStop as stop:  # stats.shard=I: the shard is saved, and that is the whole job (exit 0)
        log.info("%s", stop)
        return {}
    base_sha = stats.spec.weights_sha256

    # The config choice names the run ("low_rank" is the rank_one class with rank 4).
    label = HydraConfig.get().runtime.choices.get("strategy") if HydraConfig.initialized() else strategy.name
    extra = {"stats_time_s": stats.seconds, "stats_cached": int(stats.cached), "strategy": label or strategy.name,
             "split": cfg.split.name, "torch_threads": torch.get_num_threads()}
    extra.update(ceiling_metrics(cfg, adapter, problem, base_sha))  # before the edit: the unedited model
    scorers = build_scorers(cfg, adapter, request)
    evaluator = EVALUATORS.get(key_of(problem_key(stats, cfg.generator.get("value_at"), request),
                                      cfg.eval.perceptual, cfg.eval.tol, cfg.eval.margin),
                               lambda: Evaluator(problem, make_perceptual(cfg.eval.perceptual) if cfg.eval.perceptual
                                                 else None, cfg.eval.tol, cfg.eval.margin))
    extra["shared_work_reused"] = ",".join(sorted(name for name, (hits, _) in shared_counts().items()
                                                  if hits > hits_before.get(name, 0))) or "none"
    metrics_cb = EditMetrics(evaluator.for_problem(problem), extra, scorers)
    start_clean(out)
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
                  request, full_weights=cfg.save_full_weights)
        atomic_write(out / "config.yaml", lambda tmp: OmegaConf.save(cfg, tmp, resolve=True))
        write_metrics(out, metrics_cb.metrics, task_overrides())  # last: the run is complete
    finally:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()  # one W&B run per multirun job
    title = f"edit {request.name} with {extra['strategy']} at {cfg.generator.layer} ({cfg.split.name} split)"
    log.info("%s", run_summary(metrics_cb.metrics, out, title))
    return metrics_cb.metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    """One job; its `edit_score` is the objective a sweeper such as Optuna maximises. None for a shard run and for
    a NaN score (nothing to score): Optuna records None as a failed trial and goes on, while a NaN return ends
    hydra-optuna-sweeper's study with an error (docs/optuna.md)."""
    score = run(cfg).get("edit_score")
    return float(score) if score is not None and not math.isnan(score) else None


NO_RUN_FLAGS = {"-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion"}


def output_root(argv: list[str]) -> tuple[str, Path]:
    """The key and the folder a command line's run (or sweep) writes under: its `hydra.run.dir=` /
    `hydra.sweep.dir=` override, else the config's default, up to its first `${...}` (which only Hydra resolves).
    """
    mode = "sweep" if {"-m", "--multirun"} & set(argv) else "run"
    key = f"hydra.{mode}.dir"
    value = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "config.yaml").hydra[mode])["dir"]  # unresolved
    parser = OverridesParser.create()
    for arg in argv:
        if arg.lstrip("+").startswith(f"{key}="):
            try:
                override = parser.parse_override(arg)
            except OverrideParseException:
                continue  # Hydra reports it
            if isinstance(override.value(), str):
                value = override.value()
    parts = Path(value).parts
    return key, Path(*parts[: next((i for i, part in enumerate(parts) if "${" in part), len(parts))])


def check_output_root(argv: list[str]) -> None:
    """The folder the run will write under must be a writable folder (or creatable) before Hydra creates it and
    opens its log file there: Hydra's own failure is a traceback from its logging setup
    ("Unable to configure handler 'file'") or a bare NotADirectoryError. Nothing is created here."""
    if NO_RUN_FLAGS & set(argv):
        return
    key, folder = output_root(argv)
    try:
        check_writable_dir(folder)
    except OSError as e:
        raise type(e)(f"{key}: {e}") from None


def main() -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        check_output_root(sys.argv[1:])
    except OSError as e:  # said like Hydra says a job's error; HYDRA_FULL_ERROR=1 raises it, as Hydra does
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(f"{type(e).__name__}: {e}")
    _hydra_main()
