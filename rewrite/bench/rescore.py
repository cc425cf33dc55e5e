"""Score finished runs again with the current evaluator, from what they saved (no edit is refitted).

    python -m rewrite.bench.rescore multirun/2026-11-29/01-00-00          # every job of a sweep
    python -m rewrite.bench.rescore outputs/2026-11-29/01-00-00_rank_one   # one run
    python -m rewrite.bench.rescore outputs/my_run --allow-target my_models.   # a run of your own generator

A run folder keeps its resolved `config.yaml` and its edit file (`edit.safetensors`), so when the
metrics improve, old edits are measured the new way instead of being recomputed: the unedited model
is rebuilt from the config, the edit is applied to it (refused if the base weights differ from the
ones the edit was made on), and `metrics.json` gets the new scores (the edit's own figures — time,
strategy, split — kept).

A run folder is data, not code, and every check comes before anything is built or written:
* Only complete, fresh run folders are read (`rewrite.runner.runfolder.read_run`); incomplete or stale
  ones are skipped and listed.
* `config.yaml` may build only the objects the package's own configs name (`rewrite/conf`: its
  generators, strategies, request factories, scorers, loggers, trainer) and those under a prefix given
  with `--allow-target` (your own generator or scorer); any other `_target_`, anywhere in the config, and
  any `${...}` interpolation (a run saves its config resolved) is refused, naming the key.
* The request the config describes must be the one stored in the edit file (edit files written before
  they recorded the request used hold the resolved `edit` config, compared as such): a hand-edited
  config or another run's edit file would otherwise be scored for a request it was never made for.
* The previous metrics are kept: before the new `metrics.json` replaces it, the old one is copied to
  `metrics_history/<n>.json` (n = 001, 002, … oldest first).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rewrite.core.files import atomic_write
from rewrite.core.perceptual import make_perceptual
from rewrite.editfile.artifact import EditArtifact
from rewrite.eval.evaluate import Evaluator
from rewrite.pipeline import CONF_DIR, build_edit, build_scorers, ceiling_metrics, load_request, resolved
from rewrite.runner.outputs import EDIT_FILE
from rewrite.runner.runfolder import (
    HISTORY_DIR,
    HYDRA_OVERRIDES,
    METRICS_FILE,
    RUN_OVERRIDES,
    IncompleteRun,
    read_run,
    skipped_message,
)
from rewrite.strategies.base import EditResult

KEPT = ("edit_time_s", "stats_time_s", "stats_cached", "strategy", "split", RUN_OVERRIDES)  # the edit's own figures
CONFIG = "config.yaml"

log = logging.getLogger(__name__)


class UnsafeRunConfig(ValueError):
    """A run folder's config.yaml that would build something other than the package's (or allowed) objects."""


class RequestMismatch(ValueError):
    """A run folder whose config describes another request than its edit file was made for."""


def run_folders(paths: list[Path]) -> tuple[list[Path], dict[str, str]]:
    """The complete run folders with an edit file under `paths` (themselves included), and the others found
    there (folder -> why skipped): incomplete or stale folders, and runs from before edit files (their configs
    predate the configured scorers, so they would not be scored the new way)."""
    found: list[Path] = []
    skipped: dict[str, str] = {}
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        marks = (METRICS_FILE, EDIT_FILE, HYDRA_OVERRIDES.as_posix())  # what any run, finished or not, leaves
        runs = {m.parent.parent if m.parent.name == ".hydra" else m.parent for mark in marks for m in p.rglob(mark)}
        for run in sorted(runs):
            try:
                read_run(run)
            except IncompleteRun as e:
                skipped[str(run)] = str(e)
                continue
            if not (run / EDIT_FILE).is_file():
                skipped[str(run)] = f"no {EDIT_FILE}: a run from before edit files"
                continue
            found.append(run)
    return found, skipped


@cache
def package_targets() -> frozenset[str]:
    """Every `_target_` the package's own config files name: what a run of the package can have built."""
    targets: set[str] = set()
    for path in Path(CONF_DIR).rglob("*.yaml"):
        _walk(OmegaConf.to_container(OmegaConf.load(path)), "", lambda key, t: targets.add(t), lambda key, s: None)
    return frozenset(targets)


def _walk(node: Any, where: str, on_target: Callable[[str, object], None],
          on_string: Callable[[str, str], None]) -> None:
    """Call `on_target(key, value)` for every `_target_` that is set (whatever its type) and `on_string(key, value)`
    for every other string in a plain config container (dicts and lists, any depth); `key` is its dotted path."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        key = f"{where}[{k}]" if isinstance(node, list) else f"{where}.{k}" if where else str(k)
        if k == "_target_" and isinstance(node, dict) and v is not None:
            on_target(key, v)
        elif isinstance(v, str):
            on_string(key, v)
        else:
            _walk(v, key, on_target, on_string)


def check_targets(cfg: DictConfig, path: Path, allow: Sequence[str] = ()) -> None:
    """Refuse a config that names code outside the package's own configs (and the `allow` prefixes), or that
    holds an interpolation (which could build or read anything when resolved). Nothing is built here."""
    known = package_targets()

    def target(key: str, value: object) -> None:
        if not isinstance(value, str) or not (value in known or value.startswith(tuple(allow))):
            raise UnsafeRunConfig(f"{path}: {key} names {value!r}, which is not one of the package's own targets; "
                                  "refusing to build it (pass --allow-target PREFIX to allow your own code)")

    def string(key: str, value: str) -> None:
        if "${" in value:
            raise UnsafeRunConfig(f"{path}: {key} is an interpolation ({value!r}); a run saves its config "
                                  "resolved, so this one was edited: refusing to resolve it")

    _walk(OmegaConf.to_container(cfg, resolve=False), "", target, string)


def check_request(cfg: DictConfig, art: EditArtifact, folder: Path) -> None:
    """The request `cfg` describes is the one the edit file was made for (an older edit file: the `edit` config)."""
    request = load_request(cfg.edit, cfg.split.heldout_offset).to_dict()
    forms = (request, resolved(cfg.edit))
    if art.request in forms:
        return
    differ = min((sorted(k for k in set(form) | set(art.request) if form.get(k) != art.request.get(k))
                  for form in forms), key=len)  # against the form the edit file is closer to
    raise RequestMismatch(f"{folder / CONFIG} asks for request {request.get('name')!r} but {folder / EDIT_FILE} was "
                          f"made for {art.request.get('name')!r} (they differ in {', '.join(differ)}): refusing to "
                          "score an edit for a request it was not made for")


@dataclass(frozen=True)
class Checked:
    """A run folder that passed every check: its config, edit file and current metrics."""

    folder: Path
    cfg: DictConfig
    art: EditArtifact
    old: dict[str, object]


def check_folder(folder: Path, allow: Sequence[str] = ()) -> Checked:
    """Every check of a run folder, in order, before anything is built from it or written to it."""
    _, old = read_run(folder)
    path = folder / CONFIG
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # YAML and OmegaConf errors share no base class
        raise ValueError(f"{path}: unreadable ({e})") from None
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{path}: holds a list, not a run config")
    check_targets(cfg, path, allow)
    art = EditArtifact.load(folder / EDIT_FILE)
    try:
        check_request(cfg, art, folder)
    except OmegaConfBaseException as e:  # a key the run config must have is missing or malformed
        raise ValueError(f"{path}: {e}") from None
    return Checked(folder, cfg, art, old)


def rescore(run: Checked) -> dict[str, object]:
    """New metrics for one checked run folder (written to its metrics.json, the old one kept in the history)."""
    cfg = run.cfg
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    cfg.progress = False
    adapter, request, stats, problem = build_edit(cfg)
    perceptual = make_perceptual(cfg.eval.perceptual) if cfg.eval.perceptual else None
    evaluator = Evaluator(problem, perceptual, cfg.eval.tol, cfg.eval.margin)
    scorers = build_scorers(cfg, adapter, request)
    ceiling = ceiling_metrics(cfg, adapter, problem, stats.spec.weights_sha256)
    art = run.art
    result = EditResult(art.new_values(adapter.model.state_dict()), art.delta() if art.kind == "low_rank" else None)
    saved = adapter.state_copy()
    adapter.load_weights(result.weights)
    try:
        metrics: dict[str, object] = dict(evaluator.metrics(result))
        for scorer in scorers:
            metrics.update(scorer.metrics())
    finally:
        adapter.load_weights(saved)
    metrics.update(ceiling)
    metrics.update({k: run.old[k] for k in KEPT if k in run.old})
    keep_history(run.folder)
    atomic_write(run.folder / METRICS_FILE,
                 lambda tmp: tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True)))
    return metrics


def keep_history(folder: Path) -> Path:
    """Copy the current metrics.json to `metrics_history/<n>.json` (the next number). A copy, not a move: until
    the new metrics.json replaces it, the folder stays complete."""
    history = folder / HISTORY_DIR
    history.mkdir(exist_ok=True)
    n = 1 + max((int(p.stem) for p in history.glob("*.json") if p.stem.isdigit()), default=0)
    return atomic_write(history / f"{n:03d}.json", lambda tmp: shutil.copyfile(folder / METRICS_FILE, tmp))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path, help="run folders or sweep folders")
    ap.add_argument("--allow-target", action="append", default=[], metavar="PREFIX",
                    help="also build config `_target_`s starting with PREFIX (e.g. my_models.); repeatable")
    args = ap.parse_args(argv)
    try:
        folders, skipped = run_folders(args.paths)
        if skipped:
            log.warning("%s", skipped_message(skipped, "run"))
        if not folders:
            raise FileNotFoundError(f"no finished runs (complete folders with {METRICS_FILE} and {EDIT_FILE}) under "
                                    "the given paths")
        checked = [check_folder(folder, args.allow_target) for folder in folders]  # all, before any is rescored
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    for i, run in enumerate(checked, 1):
        m = rescore(run)
        print(f"[{i}/{len(checked)}] {run.folder}: edit_score {m.get('edit_score')}", flush=True)


if __name__ == "__main__":
    main()
