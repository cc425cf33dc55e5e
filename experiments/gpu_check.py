"""The one script to run on a CUDA machine: the CUDA tests, then statistics / edit / scoring times on CPU and GPU.

    bash experiments/gpu_check.sh [OUT.json]        # = python experiments/gpu_check.py --out OUT.json

Measured side by side in one run, best of 3 (this is what a lent GPU's few minutes should go to; CI never needs
it): for the toy generator (the committed checkpoint, layer `convs.4`, the `add_tree` request) and a 256 px
StyleGAN2 with random weights (no checkpoint ships; times do not depend on the weights), key statistics over
`--samples` latents, a `rank_one` edit (setup + fit), and for the toy model its rule scorer (snapshot + metrics).
Without CUDA it times the CPU only and says so. Figures go to the JSON file and are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from rewrite.core.problem import build_problem
from rewrite.core.site import make_site
from rewrite.core.stats import key_statistics
from rewrite.generators.base import GeneratorAdapter
from rewrite.generators.stylegan2 import StyleGAN2Generator
from rewrite.pipeline import CONF_DIR, build_scorers, load_request
from rewrite.strategies.rank_one import RankOne
from rewrite.toyworld.models.generator import load_toy_stylegan2

ROOT = Path(__file__).resolve().parent.parent


def best_of(fn: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """Best wall time of `repeats` calls, the device synchronised around each."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def stylegan2_256(device: torch.device) -> GeneratorAdapter:
    torch.manual_seed(0)
    return GeneratorAdapter(StyleGAN2Generator(256, 512, n_mlp=8).eval().to(device), z_shape=(512,),
                            name="stylegan2_256_random")


def time_model(adapter: GeneratorAdapter, layer: str, request_cfg: str, samples: int, score: bool,
               context: int | None = None) -> dict:
    """Statistics, rank_one edit and (toy) scoring times for one model on its device (`context`: keep only that many
    context regions of the request, so a 256 px model's CPU timing stays short)."""
    device = adapter.device
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"edit={request_cfg}", "progress=false"])
    request = load_request(cfg.edit)
    if context is not None:
        request = dataclasses.replace(request, context=request.context[:context])
    site = make_site(adapter, layer)
    stats = key_statistics(site, None, samples, batch_size=50, progress=False)
    n_images = 64 if score else 8  # fewer for the 256 px model, slow on a CPU
    figures = {"device": str(device), "layer": layer, "samples": samples, "context_regions": len(request.context),
               "stats_s": best_of(lambda: key_statistics(site, None, samples, batch_size=50, progress=False),
                                  device, repeats=2),
               "generate_per_image_s": best_of(lambda: adapter.generate(adapter.sample_z(list(range(n_images)))),
                                               device) / n_images}
    covariance = stats.moment.to(device)

    def edit() -> None:
        problem = build_problem(site, request, covariance)
        RankOne(rank=1).run(problem)

    figures["problem_and_rank_one_s"] = best_of(edit, device)
    if score:
        def scoring() -> None:
            for scorer in build_scorers(cfg, adapter, request):
                scorer.metrics()
        figures["toy_scoring_s"] = best_of(scoring, device)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--samples", type=int, default=1000, help="latents for the statistics timing")
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    report: dict = {"cuda": torch.cuda.is_available(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "cpu_threads": torch.get_num_threads(), "runs": []}
    if not report["cuda"]:
        print("no CUDA device: timing the CPU only", flush=True)
    if not args.skip_tests:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-m", "slow or not slow"],
                              cwd=ROOT, capture_output=True, text=True)
        report["cuda_tests"] = {"returncode": proc.returncode, "tail": proc.stdout.strip().splitlines()[-1:]}
    for device in devices:
        toy = load_toy_stylegan2()
        toy.model.to(device)
        report["runs"].append({"model": "toy_stylegan2", **time_model(toy, "convs.4", "toy_add_tree",
                                                                      args.samples, score=True)})
        big = stylegan2_256(device)
        report["runs"].append({"model": big.name, **time_model(big, "convs.5", "face_eyeglasses",
                                                               min(args.samples, 200), score=False, context=4)})
        print(json.dumps(report["runs"][-2:], indent=1), flush=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
