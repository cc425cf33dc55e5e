"""Write the toy generator's paste ceilings into its card: every rule's request at the 32 px layers.

    python experiments/ceiling_card.py [--layers convs.3,convs.4,convs.5,convs.6] [--checkpoint other.pt]

The figures of `python -m rewrite.bench.ceiling` (validation split, the default request of each rule) go to
the card under `paste_ceiling`: {rule: {layer: {ceiling_efficacy, ceiling_generality, n_ceiling_heldout}}}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from rewrite.bench.ceiling import format_table, layer_ceilings
from rewrite.pipeline import CONF_DIR
from rewrite.toyworld import RULES
from rewrite.toyworld.models.generator import toy_checkpoint_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default="convs.3,convs.4,convs.5,convs.6")
    ap.add_argument("--checkpoint", help="another toy generator (its card beside it gets the figures)")
    args = ap.parse_args()
    extra = [f"generator.model.checkpoint={args.checkpoint}"] if args.checkpoint else []
    figures: dict[str, dict[str, dict]] = {}
    for rule in RULES:
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=["generator=toy_stylegan2", f"edit=toy_{rule}", "progress=false", *extra])
        rows = layer_ceilings(cfg, args.layers.split(","))
        print(rule, "\n" + format_table(rows), flush=True)
        figures[rule] = {r["layer"]: {k: v for k, v in r.items() if k not in ("layer",)} for r in rows}
    path = (Path(args.checkpoint) if args.checkpoint else toy_checkpoint_path()).with_suffix(".json")
    card = json.loads(path.read_text())
    command = "python experiments/ceiling_card.py" + (f" --checkpoint {args.checkpoint}" if args.checkpoint else "")
    card["paste_ceiling"] = {**figures, "command": command,
                             "split": "validation", "what": "rewrite.bench.ceiling per rule and layer"}
    path.write_text(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
