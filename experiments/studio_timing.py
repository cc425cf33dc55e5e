"""How long the studio's actions take on this CPU (issue 20: a rank-one edit of the toy model on the page in ≤ 3 s
from the click, the heat map in ≤ 1 s), measured on the backend the page calls (`rewrite.studio.backend`).

    python experiments/studio_timing.py [--threads 1] [--repeats 5]

The request is the toy_add_tree example (copy, paste, 96 context regions, its rule's 32 held-out scenes scored
against the exact ideal), rank_one with the toy model's tuned settings. "run (prepared)" is what a click on
*run* costs once the page has prepared the request in the background (it does so as soon as the request is
complete); "run (cold)" includes that preparation. Statistics are loaded (or computed) once before timing,
as after "Load model". Prints medians and the spread; the numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from rewrite.studio.backend import Studio


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def show(name: str, times: list[float]) -> None:
    print(f"{name:<34} median {statistics.median(times):6.2f} s   min {min(times):6.2f}   max {max(times):6.2f}"
          f"   (n={len(times)})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    studio = Studio(tempfile.mkdtemp(prefix="studio_timing_"))
    t0 = time.perf_counter()
    studio.load_model("toy_stylegan2")
    print(f"load model + statistics: {time.perf_counter() - t0:.2f} s "
          f"({'cached' if studio.require_model().stats.cached else 'computed'}), {args.threads} thread(s)")
    studio.load_preset("toy_add_tree")
    page = studio.page(0)
    studio.heatmap(page)  # first call: keys of the page's samples

    show("heat map, 12 samples (same request)", timed(lambda: studio.heatmap(page), args.repeats))
    boxes = iter(range(10_000))

    def context_then_heat() -> None:  # a new context region: a new problem, then the heat map
        studio.add_context(next(boxes) + 100, list(studio.draft.paste.box))
        studio.heatmap(page)

    show("add a context region + heat map", timed(context_then_heat, args.repeats))
    show("next page's heat map (new keys)", timed(lambda: studio.heatmap(studio.page(next(boxes) + 1)), args.repeats))

    studio.runs.prepare()
    show("run rank_one (prepared)", timed(lambda: studio.runs.run("rank_one"), args.repeats))
    fits = [o.metrics["edit_time_s"] for o in studio.runs.outcomes]
    show("  of which the fit", fits)

    def cold() -> None:
        studio.add_context(next(boxes) + 100, list(studio.draft.paste.box))  # a changed request: nothing prepared
        studio.runs.run("rank_one")

    show("run rank_one (cold: new request)", timed(cold, max(2, args.repeats // 2)))
    show("paste ceiling (after the result)", timed(studio.runs.ceiling, 1))


if __name__ == "__main__":
    main()
