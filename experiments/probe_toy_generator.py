"""Which scene factors the toy generator has learned (see rewrite.toyworld.factors).

    python experiments/probe_toy_generator.py [--checkpoint PATH] [--json out.json]

Prints, for every z field, the R² of a linear read-out of it from w (is it still in the mapping's
output?) and how far the generator's image follows a flip of it (is it drawn?). Factors marked `!`
are lost: a low read-out means the mapping dropped them, a low follow alone means the synthesis has
not learned to draw them yet.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from rewrite.generators.toy_stylegan2 import load_toy_stylegan2
from rewrite.toyworld.factors import factor_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--json", default=None, help="also write the table here")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = factor_table(load_toy_stylegan2(args.checkpoint))
    print(f"{'z field':<18} {'readout R²':>10} {'follow':>7}")
    for name, r2, fol in rows:
        print(f"{name:<18} {r2:>10.3f} {fol:>7.2f} {'!' if r2 < 0.5 or fol < 0.3 else ''}")  # NaN: not visible
    r2s, fols = [r[1] for r in rows], [r[2] for r in rows if not math.isnan(r[2])]
    print(f"{'mean':<18} {sum(r2s) / len(r2s):>10.3f} {sum(fols) / len(fols):>7.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({name: {"readout_r2": r2, "follow": fol} for name, r2, fol in rows}, f, indent=2)


if __name__ == "__main__":
    main()
