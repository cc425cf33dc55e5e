"""Quality figures of the toy generator on held-out z, against the renderer's ground truth.

    python experiments/eval_toy_generator.py [--n 1000] [--seed 424242] [--per-class] [--update-card]

* MAE: mean absolute error between generated and rendered images, both in [0, 1];
* mIoU: the segmenter's labels of the generated images against the true label maps (classes
  present in either, averaged);
* tower tops read correctly: for each tower, the majority top class (dome / spire / flat) the
  segmenter finds inside its true top box equals the true kind.
--per-class adds the IoU of each class (`class_iou`). With --update-card the figures are written into
the generator's JSON card.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rewrite.toyworld.models.generator import toy_checkpoint_path
from rewrite.toyworld.models.quality import quality


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=424242)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--per-class", action="store_true", help="also print each class's IoU")
    ap.add_argument("--update-card", action="store_true")
    args = ap.parse_args()
    figures = quality(args.n, args.seed, args.checkpoint, args.per_class)
    print(json.dumps(figures, indent=2))
    if args.update_card:
        card_path = Path(args.checkpoint or toy_checkpoint_path()).with_suffix(".json")
        card = json.loads(card_path.read_text())
        command = " ".join(["python experiments/eval_toy_generator.py", *sys.argv[1:]])  # the figures' n and seed
        card["quality"] = {**figures, "command": command}
        card_path.write_text(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
