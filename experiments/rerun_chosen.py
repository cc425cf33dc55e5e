"""Run a benchmark's chosen settings again on the test seeds with today's scorer, and tabulate per-part
specificity and the paste ceiling beside the old figures (no re-choosing; the edits are refitted).

    python experiments/rerun_chosen.py experiments/results/toy_world_v2/toy_add_tree \\
        --checkpoint experiments/results/toy_world_v2/toy_stylegan2_v2.pt

Writes `<results>/rescored.md` and keeps the run folders under `--runs` (default: a temporary folder).
For results whose run folders were not kept (edit files are what `python -m rewrite.bench.rescore` needs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rewrite.runner.runfolder import IncompleteRun, read_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="a benchmark folder with chosen.json (named after its edit config)")
    ap.add_argument("--checkpoint", required=True, help="the generator the results were made on")
    ap.add_argument("--runs", type=Path, default=None)
    args = ap.parse_args()
    edit = args.results.name
    chosen = json.loads((args.results / "chosen.json").read_text())
    runs = args.runs or Path(tempfile.mkdtemp(prefix=f"rerun_{edit}_"))
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    lines = ["| strategy | specificity per part (worst part) | specificity of pixels | generality | edit_score | "
             "ceiling efficacy / generality |", "|---|---|---|---|---|---|"]
    for name, choice in chosen.items():
        folder = runs / name
        try:
            read_run(folder)
        except IncompleteRun:  # missing, killed or stale: run it (again)
            cmd = [sys.executable, "-m", "rewrite", f"edit={edit}", f"+experiment=search_toy_{name}",
                   *(f"{k}={v}" for k, v in choice["overrides"].items()), "split=test", "logger=none",
                   "progress=false", "torch_threads=1", f"generator.model.checkpoint={Path(args.checkpoint).resolve()}",
                   f"hydra.run.dir={folder}"]
            subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        m = read_run(folder)[1]
        lines.append(f"| `{name}` | {m['specificity']:.2f} ({m['specificity_worst_class_name']} "
                     f"{m['specificity_worst_class']:.2f}) | {m['specificity_pixels']:.3f} | {m['generality']:.2f} | "
                     f"{m['edit_score']:.2f} | {m['ceiling_efficacy']:.2f} / {m['ceiling_generality']:.2f} |")
        print(lines[-1], flush=True)
    (args.results / "rescored.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
