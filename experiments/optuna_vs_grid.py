"""Grid vs Optuna at equal job counts: one rule, one strategy, best validation edit_score of each.

    python experiments/optuna_vs_grid.py --edit toy_add_tree --strategy rank_one --out results/optuna_vs_grid

Runs the strategy's grid (`+experiment=search_<family>_<strategy>`, every setting once) and an Optuna study
over the same space (`hydra/sweeper=optuna_tpe`) with as many trials as the grid has jobs (`--trials` to change
it), both on the validation seeds with the benchmark's settings (one torch thread, no perceptual distance, no
FID), and prints each one's best edit_score, its setting, how many distinct settings it ran, and its wall time.
The Optuna column also gives the best after each trial, i.e. the best a smaller study (the same seed) reaches.
Folders that already hold a complete sweep are read, not run again.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from rewrite.bench.benchmark import COMMON, EXPERIMENTS, VALIDATION_ONLY, complete, family
from rewrite.bench.optuna_search import grid_size, optuna_overrides, read_study, search_space
from rewrite.bench.sweep_table import load_sweep


def multirun(overrides: list[str], folder: Path) -> float:
    """Run one multirun (one thread, W&B off) into `folder`; its wall time in seconds (0 when it was complete)."""
    if complete(folder):
        return 0.0
    cmd = [sys.executable, "-m", "rewrite", "-m", *overrides, f"hydra.sweep.dir={folder}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def summarize(folder: Path, keys: list[str]) -> tuple[list[float], list[tuple[str, ...]]]:
    """Each job's edit_score (NaN where it had none) and setting, in job order."""
    rows = load_sweep(folder).rows
    scores = [float(s) if isinstance(s := r.get("edit_score"), int | float) else math.nan for r in rows]
    return scores, [tuple(str(r.get(k)) for k in keys) for r in rows]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edit", default="toy_add_tree")
    ap.add_argument("--strategy", default="rank_one")
    ap.add_argument("--trials", type=int, default=None, help="Optuna jobs (default: the grid's job count)")
    ap.add_argument("--seed", type=int, default=0, help="Optuna sampler seed")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    experiment = EXPERIMENTS / f"search_{family(args.edit)}_{args.strategy}.yaml"
    space = search_space(experiment)
    keys = [k for k, v in space.items() if len(v) > 1]
    trials = args.trials or grid_size(experiment)
    base = [f"+experiment={experiment.stem}", f"edit={args.edit}", "split=validation", *COMMON, *VALIDATION_ONLY]
    grid_dir, optuna_dir = args.out / "grid", args.out / f"optuna_{trials}_seed{args.seed}"
    grid_s = multirun(base, grid_dir)
    optuna_s = multirun([*base, *optuna_overrides(experiment, trials, args.seed)], optuna_dir)
    study = read_study(optuna_dir)

    print(f"{args.edit}, {args.strategy}: space {space} ({grid_size(experiment)} settings)\n")
    print("| search | jobs | distinct settings | best validation edit_score | its setting | wall s |")
    print("|---|---|---|---|---|---|")
    for name, folder, wall in (("grid", grid_dir, grid_s), (f"Optuna TPE seed {args.seed}", optuna_dir, optuna_s)):
        scores, settings = summarize(folder, keys)
        finite = [(s, i) for i, s in enumerate(scores) if not math.isnan(s)]
        best, at = max(finite) if finite else (math.nan, -1)
        setting = ", ".join(f"{k}={v}" for k, v in zip(keys, settings[at], strict=True)) if at >= 0 else "-"
        print(f"| {name} | {len(scores)} | {len(set(settings))} | {best:.4f} | {setting} | "
              f"{'(reused)' if wall == 0 else f'{wall:.0f}'} |")
    scores, settings = summarize(optuna_dir, keys)
    running = [max((s for s in scores[: n + 1] if not math.isnan(s)), default=math.nan) for n in range(len(scores))]
    print("\nOptuna, trial by trial (setting, edit_score, best so far):")
    for n, (setting, score, so_far) in enumerate(zip(settings, scores, running, strict=True)):
        print(f"  {n}: {', '.join(setting)}  {score:.4f}  {so_far:.4f}")
    print(f"\nOptuna's own best_value {study['best_value']:.4f} at {study['best_params']}")


if __name__ == "__main__":
    main()
