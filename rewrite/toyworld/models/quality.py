"""Quality figures of a toy generator against the renderer's ground truth (see experiments/eval_toy_generator.py)."""

from __future__ import annotations

import torch
from torch import Tensor

from rewrite.toyworld.models.generator import load_toy_stylegan2
from rewrite.toyworld.models.segmenter import ToySegmenter, load_toy_segmenter
from rewrite.toyworld.world.labels import CLASS_ID, CLASSES, tower_top_boxes
from rewrite.toyworld.world.params import Z_DIM, SceneParams, params_from_z
from rewrite.toyworld.world.render import render

TOP_CLASSES = torch.tensor([CLASS_ID["dome"], CLASS_ID["spire"], CLASS_ID["flat_top"]])
RULE_SOURCE_CLASS = {"dome_to_spire": "dome", "remove_watermark": "watermark", "add_tree": "tree",
                     "no_reflections": "reflection"}
"""Per rule, the class its edit acts on in the unedited image (for add_tree: the trees already there)."""


def quality(n: int, seed: int, checkpoint: str | None = None, per_class: bool = False) -> dict:
    """MAE (images in [0, 1]), segmenter mIoU against true labels, share of tower tops read right, and
    `rule_source_recall` per rule. With `per_class`, also `class_iou`: the IoU of each class that the mIoU averages.
    """
    adapter = load_toy_stylegan2(checkpoint)
    z = torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(seed))
    params = params_from_z(z)
    truth, true_labels = render(params)
    fake = (adapter.generate(z).clamp(-1, 1) + 1) / 2
    figures = score_images(fake, truth, true_labels, params, load_toy_segmenter(), per_class)
    return {"heldout_n": n, "heldout_seed": seed, **figures}


@torch.no_grad()
def rule_source_recall(pred: Tensor, true_labels: Tensor) -> dict[str, float]:
    """Per rule, the share of true source-class pixels the segmenter reads as that class (NaN if none)."""
    out = {}
    for rule, name in RULE_SOURCE_CLASS.items():
        t = true_labels == CLASS_ID[name]
        out[rule] = float(((pred == CLASS_ID[name]) & t).sum() / t.sum()) if t.any() else float("nan")
    return out


@torch.no_grad()
def class_ious(pred: Tensor, true_labels: Tensor) -> dict[str, float]:
    """IoU of each class present in the prediction or the truth, pooled over all images."""
    ious = {}
    for c, name in enumerate(CLASSES):
        p, t = pred == c, true_labels == c
        union = (p | t).sum()
        if union > 0:
            ious[name] = float((p & t).sum() / union)
    return ious


def score_images(
    fake: Tensor, truth: Tensor, true_labels: Tensor, params: SceneParams, seg: ToySegmenter,
    per_class: bool = False,
) -> dict:
    """The quality figures of generated images `fake` (in [0, 1]) against renders of the same `params`.

    Shared by the evaluation script and the training loop's validation, so both report one metric.
    """
    pred = seg.labels(fake)
    ious = class_ious(pred, true_labels)
    boxes = tower_top_boxes(params).cpu()
    present, kinds, pred = params.tower_present.cpu(), params.top_kind.cpu(), pred.cpu()
    right = total = 0
    for i in range(len(fake)):
        for k in range(2):
            if not present[i, k]:
                continue
            x0, y0, x1, y1 = boxes[i, k].tolist()
            counts = torch.stack([(pred[i, y0:y1, x0:x1] == c).sum() for c in TOP_CLASSES])
            right += int(counts.argmax() == kinds[i, k] and counts.max() > 0)
            total += 1
    figures = {"mae01": float((fake - truth).abs().mean()), "segmenter_miou": sum(ious.values()) / len(ious),
               "tower_tops_read_correctly": right / max(total, 1), "towers": total,
               "rule_source_recall": rule_source_recall(pred, true_labels.cpu())}
    return {**figures, "class_iou": ious} if per_class else figures
