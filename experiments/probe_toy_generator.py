"""Which scene factors the toy generator has learned (see rewrite.toyworld.models.factors).

    python experiments/probe_toy_generator.py [--checkpoint PATH] [--json out.json]

Prints, for every z field, how far the generator's image follows a flip of it (is it drawn?).
Factors marked `!` (follow < 0.3) are not drawn yet.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from rewrite.toyworld.models.factors import factor_table
from rewrite.toyworld.models.generator import load_toy_stylegan2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--json", default=None, help="also write the table here")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = factor_table(load_toy_stylegan2(args.checkpoint))
    print(f"{'z field':<18} {'follow':>7}")
    for name, fol in rows:
        print(f"{name:<18} {fol:>7.2f} {'!' if fol < 0.3 else ''}")  # NaN: not visible in the samples
    fols = [fol for _, fol in rows if not math.isnan(fol)]
    print(f"{'mean':<18} {sum(fols) / len(fols):>7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({name: {"follow": fol} for name, fol in rows}, f, indent=2)

if __name__ == "__main__":
    main()
