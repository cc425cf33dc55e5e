"""Can the toy generator's synthesis draw a scene at all? Fit a free W+ latent to its render.

    python experiments/invert_toy_generator.py [--n 8] [--steps 300] [--checkpoint PATH] [--out inv.png]

The weights stay fixed; only one w per synthesis layer (W+) is fitted by Adam to the L1 distance to
the true render of held-out z. What the fitted images still lack is beyond the synthesis layers (no
feature draws it); what they gain over the generator's own w is the scene code map's fault. Prints the
mean L1 per class (images in [0, 1]) before and after, and saves truth / generated / fitted rows.
"""

from __future__ import annotations

import argparse

import torch
import torchvision

from rewrite.toyworld import Z_DIM, params_from_z, render
from rewrite.toyworld.models.generator import load_toy_stylegan2
from rewrite.toyworld.models.invert import class_l1, fit_w_plus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=424242)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--out", default=None, help="PNG of truth / generated / fitted rows")
    args = ap.parse_args()
    if args.n < 1 or args.steps < 0:
        ap.error("--n must be >= 1 and --steps >= 0")
    g = load_toy_stylegan2(args.checkpoint).model.requires_grad_(False)
    z = torch.randn(args.n, Z_DIM, generator=torch.Generator().manual_seed(args.seed))
    truth, labels = render(params_from_z(z))
    with torch.no_grad():
        w = g.style(z)
        generated = (g(w, input_is_latent=True).clamp(-1, 1) + 1) / 2
    fitted_w = fit_w_plus(g, w, truth * 2 - 1, args.steps, args.lr)
    with torch.no_grad():
        fitted = (g(fitted_w, input_is_latent=True).clamp(-1, 1) + 1) / 2
    before, after = class_l1(generated, truth, labels), class_l1(fitted, truth, labels)
    print(f"{'class':12s} {'L1 its own w':>13s} {'L1 fitted W+':>13s}")
    for c in before:
        print(f"{c:12s} {before[c]:13.3f} {after[c]:13.3f}")
    print(f"{'all':12s} {float((generated - truth).abs().mean()):13.3f} {float((fitted - truth).abs().mean()):13.3f}")
    if args.out:
        grid = torch.nn.functional.interpolate(torch.cat([truth, generated, fitted]), scale_factor=3, mode="nearest")
        torchvision.utils.save_image(grid, args.out, nrow=args.n)


if __name__ == "__main__":
    main()
