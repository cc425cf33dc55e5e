"""Write the toy generator's paste ceilings into its card: every rule's request at the 32 px layers.

    python experiments/ceiling_card.py [--layers convs.3,convs.4,convs.5,convs.6]

The figures of `python -m rewrite.bench.ceiling` (validation split, the default request of each rule) go to
the card under `paste_ceiling`: {rule: {layer: {ceiling_efficacy, ceiling_generality, n_ceiling_heldout}}}.
"""

from __future__ import annotations

import argparse
import json

from hydra import compose, initialize_config_dir

from rewrite.bench.ceiling import format_table, layer_ceilings
from rewrite.pipeline import CONF_DIR
from rewrite.toyworld import RULES
from rewrite.toyworld.models.generator import toy_checkpoint_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default="convs.3,convs.4,convs.5,convs.6")
    args = ap.parse_args()
    figures: dict[str, dict[str, dict]] = {}
    for rule in RULES:
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=["generator=toy_stylegan2", f"edit=toy_{rule}", "progress=false"])
        rows = layer_ceilings(cfg, args.layers.split(","))
        print(rule, "\n" + format_table(rows), flush=True)
        figures[rule] = {r["layer"]: {k: v for k, v in r.items() if k not in ("layer",)} for r in rows}
    path = toy_checkpoint_path().with_suffix(".json")
    card = json.loads(path.read_text())
    card["paste_ceiling"] = {**figures, "command": "python experiments/ceiling_card.py",
                             "split": "validation", "what": "rewrite.bench.ceiling per rule and layer"}
    path.write_text(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
