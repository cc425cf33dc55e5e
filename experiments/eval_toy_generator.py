"""Quality figures of the toy generator on held-out z, against the renderer's ground truth.

    python experiments/eval_toy_generator.py [--n 1000] [--seed 424242] [--update-card]

* MAE: mean absolute error between generated and rendered images, both in [0, 1];
* mIoU: the segmenter's labels of the generated images against the true label maps (classes
  present in either, averaged);
* tower tops read correctly: for each tower, the majority top class (dome / spire / flat) the
  segmenter finds inside its true top box equals the true kind.
With --update-card the figures are written into the generator's JSON card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rewrite.generators.toy_stylegan2 import load_toy_stylegan2, toy_checkpoint_path
from rewrite.toyworld import CLASS_ID, CLASSES, Z_DIM, params_from_z, render, tower_top_boxes
from rewrite.toyworld.segmenter import load_toy_segmenter

TOP_CLASSES = torch.tensor([CLASS_ID["dome"], CLASS_ID["spire"], CLASS_ID["flat_top"]])


def quality(n: int, seed: int, checkpoint: str | None = None) -> dict[str, float]:
    adapter = load_toy_stylegan2(checkpoint)
    seg = load_toy_segmenter()
    z = torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(seed))
    params = params_from_z(z)
    truth, true_labels = render(params)
    fake = (adapter.generate(z).clamp(-1, 1) + 1) / 2
    pred = seg.labels(fake)
    ious = []
    for c in range(len(CLASSES)):
        p, t = pred == c, true_labels == c
        union = (p | t).sum()
        if union > 0:
            ious.append(float((p & t).sum() / union))
    boxes = tower_top_boxes(params)
    right = total = 0
    for i in range(n):
        for k in range(2):
            if not params.tower_present[i, k]:
                continue
            x0, y0, x1, y1 = boxes[i, k].tolist()
            counts = torch.stack([(pred[i, y0:y1, x0:x1] == c).sum() for c in TOP_CLASSES])
            right += int(counts.argmax() == params.top_kind[i, k] and counts.max() > 0)
            total += 1
    return {"heldout_n": n, "heldout_seed": seed, "mae01": float((fake - truth).abs().mean()),
            "segmenter_miou": sum(ious) / len(ious), "tower_tops_read_correctly": right / total, "towers": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=424242)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--update-card", action="store_true")
    args = ap.parse_args()
    figures = quality(args.n, args.seed, args.checkpoint)
    print(json.dumps(figures, indent=2))
    if args.update_card:
        card_path = Path(args.checkpoint or toy_checkpoint_path()).with_suffix(".json")
        card = json.loads(card_path.read_text())
        card["quality"] = {**figures, "command": "python experiments/eval_toy_generator.py --update-card"}
        card_path.write_text(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
