"""The README / docs/results.md table of the toy benchmark: every strategy x rule from the benchmark folders.

    python experiments/toy_results_table.py [--results experiments/results]

Each cell: generality / specificity (per part) / **edit_score** on the test seeds, then the edit_score's range
over the copy/paste examples; a last row gives each rule's paste ceiling (efficacy / generality) at the layer
rank_one chose. Read from `<results>/toy_<rule>/test/<n>_<strategy>/metrics.json` and `examples/`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rewrite.runner.runfolder import IncompleteRun, read_run

RULES = ("dome_to_spire", "remove_watermark", "add_tree", "no_reflections")
STRATEGIES = ("rank_one", "low_rank", "closed_form", "projected_adam", "layer_finetune", "full_finetune")


def _metrics(folder: Path) -> dict | None:
    """The metrics of a complete, fresh run folder; None (and a note on stderr) for any other."""
    try:
        return read_run(folder)[1]
    except IncompleteRun as e:
        if folder.exists():
            print(f"{folder}: left out ({e})", file=sys.stderr)
        return None


def cell(root: Path, rule: str, i: int, name: str) -> tuple[str, dict | None]:
    m = _metrics(root / f"toy_{rule}" / "test" / f"{i}_{name}")
    if m is None:
        return "-", None
    examples = sorted((root / f"toy_{rule}" / "examples" / f"{i}_{name}").glob("[0-9]*"))
    scores = [m["edit_score"]] + [e["edit_score"] for e in map(_metrics, examples) if e is not None]
    spread = f" ({min(scores):.2f}–{max(scores):.2f})" if len(scores) > 1 else ""
    return f"{m['generality']:.2f} / {m['specificity']:.2f} / **{m['edit_score']:.2f}**{spread}", m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=Path("experiments/results"))
    args = ap.parse_args()
    lines = ["| strategy | " + " | ".join(f"`{r}`" for r in RULES) + " | edit time s |",
             "|---|" + "---|" * (len(RULES) + 1)]
    ceilings: dict[str, str] = {}
    for i, name in enumerate(STRATEGIES):
        row, times = [], []
        for rule in RULES:
            text, m = cell(args.results, rule, i, name)
            row.append(text)
            if m is not None:
                times.append(m["edit_time_s"])
                if name == "rank_one":
                    ceilings[rule] = " / ".join(f"{v:.2f}" if v == v else "–"
                                                for v in (m["ceiling_efficacy"], m["ceiling_generality"]))
        t = f"{min(times):.2g}–{max(times):.2g}" if times else "-"
        lines.append(f"| `{name}` | " + " | ".join(row) + f" | {t} |")
    lines.append("| paste ceiling at rank_one's layer (efficacy / generality) | "
                 + " | ".join(ceilings.get(r, "-") for r in RULES) + " | |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
