"""Score finished runs again with the current evaluator, from what they saved (no edit is refitted).

    python -m rewrite.rescore multirun/2026-11-29/01-00-00          # every job of a sweep
    python -m rewrite.rescore outputs/2026-11-29/01-00-00_rank_one   # one run

A run folder keeps its resolved `config.yaml` and `edited_weights.safetensors` (plus `delta.safetensors`
for low-rank edits), so when the metrics improve, old edits are measured the new way instead of being
recomputed: the unedited model is rebuilt from the config, the edited weights are loaded, and
`metrics.json` is rewritten with the new scores (the edit's own figures — time, strategy, split — kept).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file

from rewrite.evaluate import Evaluator
from rewrite.perceptual import make_perceptual
from rewrite.run import build_edit, toy_scorers
from rewrite.strategies.base import EditResult, LowRankDelta

KEPT = ("edit_time_s", "stats_time_s", "stats_cached", "strategy", "split")  # the edit's own figures


def run_folders(paths: list[Path]) -> list[Path]:
    """Every folder under `paths` (themselves included) that holds a finished run."""
    found: list[Path] = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        found += sorted(m.parent for m in p.rglob("metrics.json")
                        if (m.parent / "edited_weights.safetensors").is_file())
    return found


def _result(folder: Path) -> EditResult:
    """The saved edit: the full edited state dict, and the low-rank delta where the run wrote one."""
    weights = load_file(str(folder / "edited_weights.safetensors"))
    delta_path = folder / "delta.safetensors"
    if not delta_path.is_file():
        return EditResult(weights)
    with safe_open(str(delta_path), framework="pt") as f:
        meta = f.metadata() or {}
    d = load_file(str(delta_path))
    return EditResult(weights, LowRankDelta(meta["weight_name"], d["directions"], d["lam"], int(meta["in_axis"])))


def rescore(folder: Path) -> dict[str, object]:
    """New metrics for one run folder (written to its metrics.json)."""
    cfg = OmegaConf.load(folder / "config.yaml")
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    cfg.progress = False
    adapter, request, _, problem = build_edit(cfg)
    perceptual = make_perceptual(cfg.eval.perceptual) if cfg.eval.perceptual else None
    evaluator = Evaluator(problem, perceptual, cfg.eval.tol, cfg.eval.margin)
    scorers = toy_scorers(cfg, adapter, request)
    result = _result(folder)
    saved = adapter.state_copy()
    adapter.load_weights(result.weights)
    try:
        metrics: dict[str, object] = dict(evaluator.metrics(result))
        for scorer in scorers:
            metrics.update(scorer.metrics())
    finally:
        adapter.load_weights(saved)
    old = json.loads((folder / "metrics.json").read_text())
    metrics.update({k: old[k] for k in KEPT if k in old})
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path, help="run folders or sweep folders")
    args = ap.parse_args(argv)
    folders = run_folders(args.paths)
    if not folders:
        raise SystemExit("no finished runs (metrics.json + edited_weights.safetensors) under the given paths")
    for i, folder in enumerate(folders, 1):
        m = rescore(folder)
        print(f"[{i}/{len(folders)}] {folder}: edit_score {m.get('edit_score')}", flush=True)


if __name__ == "__main__":
    main()
