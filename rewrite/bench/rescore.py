"""Score finished runs again with the current evaluator, from what they saved (no edit is refitted).

    python -m rewrite.bench.rescore multirun/2026-11-29/01-00-00          # every job of a sweep
    python -m rewrite.bench.rescore outputs/2026-11-29/01-00-00_rank_one   # one run

A run folder keeps its resolved `config.yaml` and its edit file (`edit.safetensors`), so when the
metrics improve, old edits are measured the new way instead of being recomputed: the unedited model
is rebuilt from the config, the edit is applied to it (refused if the base weights differ from the
ones the edit was made on), and `metrics.json` is rewritten with the new scores (the edit's own
figures — time, strategy, split — kept).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from rewrite.core.files import atomic_write
from rewrite.core.perceptual import make_perceptual
from rewrite.editfile.artifact import EditArtifact
from rewrite.eval.evaluate import Evaluator
from rewrite.pipeline import build_edit, build_scorers, ceiling_metrics
from rewrite.runner.outputs import EDIT_FILE
from rewrite.strategies.base import EditResult

KEPT = ("edit_time_s", "stats_time_s", "stats_cached", "strategy", "split")  # the edit's own figures


def run_folders(paths: list[Path]) -> list[Path]:
    """Every folder under `paths` (themselves included) that holds a finished run with an edit file.

    Runs saved before edit files existed (`edited_weights.safetensors` only) are listed on stderr and
    skipped: their configs predate the configured scorers, so they would not be scored the new way.
    """
    found: list[Path] = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        runs = sorted(m.parent for m in p.rglob("metrics.json"))
        found += [r for r in runs if (r / EDIT_FILE).is_file()]
        for r in runs:
            if not (r / EDIT_FILE).is_file():
                print(f"skipped {r}: no {EDIT_FILE} (a run from before edit files)", file=sys.stderr)
    return found


def rescore(folder: Path) -> dict[str, object]:
    """New metrics for one run folder (written to its metrics.json)."""
    cfg = OmegaConf.load(folder / "config.yaml")
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    cfg.progress = False
    adapter, request, stats, problem = build_edit(cfg)
    perceptual = make_perceptual(cfg.eval.perceptual) if cfg.eval.perceptual else None
    evaluator = Evaluator(problem, perceptual, cfg.eval.tol, cfg.eval.margin)
    scorers = build_scorers(cfg, adapter, request)
    ceiling = ceiling_metrics(cfg, adapter, problem, stats.spec.weights_sha256)
    art = EditArtifact.load(folder / EDIT_FILE)
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
    old = json.loads((folder / "metrics.json").read_text())
    metrics.update({k: old[k] for k in KEPT if k in old})
    atomic_write(folder / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True)))
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path, help="run folders or sweep folders")
    args = ap.parse_args(argv)
    folders = run_folders(args.paths)
    if not folders:
        raise SystemExit(f"no finished runs (metrics.json + {EDIT_FILE}) under the given paths")
    for i, folder in enumerate(folders, 1):
        m = rescore(folder)
        print(f"[{i}/{len(folders)}] {folder}: edit_score {m.get('edit_score')}", flush=True)


if __name__ == "__main__":
    main()
