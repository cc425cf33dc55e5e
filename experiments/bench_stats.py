"""Key statistics against plain generator forward passes over the same samples, measured in one run.

    python experiments/bench_stats.py [--samples 200] [--threads 1]

For an early, a middle and the last editable layer of the face model and the toy StyleGAN2 it times
(best of 3) the key capture used for statistics (`site.capture_keys`: the pass stops at the layer),
the full capture (`site.capture`: keys, layer output and value, through the whole generator) and a
plain `adapter.generate`, and prints the ratios. Target: statistics cost at most a forward pass up
to the layer, so the keys / forward ratio falls from early to late layers and stays ≤ ~1 at the end.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import torch

from rewrite.core.site import make_site
from rewrite.generators.dcgan_face import load_dcgan_face
from rewrite.toyworld.models.generator import load_toy_stylegan2

MODELS = {"dcgan_face": (load_dcgan_face, ["main.0", "main.6", "main.12"]),
          "toy_stylegan2": (load_toy_stylegan2, ["conv1", "convs.3", "convs.7"])}


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'model':14s} {'layer':8s} {'forward s':>9s} {'keys s':>8s} {'capture s':>9s} "
          f"{'keys/fwd':>8s} {'capture/fwd':>11s}")
    for name, (load, layers) in MODELS.items():
        adapter = load()
        z = adapter.sample_z_stream(args.samples, 0)
        with torch.no_grad():
            forward = best_of(functools.partial(adapter.model, z))
        for layer in layers:
            site = make_site(adapter, layer)
            keys = best_of(functools.partial(site.capture_keys, z))
            full = best_of(functools.partial(site.capture, z))
            print(f"{name:14s} {layer:8s} {forward:9.3f} {keys:8.3f} {full:9.3f} {keys / forward:8.2f} "
                  f"{full / forward:11.2f}", flush=True)


if __name__ == "__main__":
    main()
