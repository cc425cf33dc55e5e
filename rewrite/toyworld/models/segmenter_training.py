"""Train the toy-world segmenter on renders with light augmentation (so it also reads generated images).

    python -m rewrite.toyworld.models.segmenter_training [--steps 1500] [--out rewrite/assets/toy_segmenter.pt]
    python experiments/train_toy_segmenter.py ...    # the same

Writes the weights and a JSON card with the held-out per-pixel accuracy and per-class IoU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from rewrite.toyworld import CLASSES, Z_DIM, params_from_z, render
from rewrite.toyworld.models.segmenter import ToySegmenter


def augment(x: Tensor, g: torch.Generator) -> Tensor:
    """Blur (what a generator's output looks like), noise and a little colour jitter."""
    n = x.shape[0]
    sigma = torch.rand(n, generator=g) * 1.2
    taps = torch.arange(-2, 3, dtype=torch.float)
    k = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k = k / k.sum(1, keepdim=True)  # (n, 5) separable kernels
    xs = x.reshape(1, n * 3, *x.shape[-2:])
    kh = k.repeat_interleave(3, 0)[:, None, None, :]
    xs = F.conv2d(F.pad(xs, (2, 2, 0, 0), mode="replicate"), kh, groups=n * 3)
    xs = F.conv2d(F.pad(xs, (0, 0, 2, 2), mode="replicate"), kh.transpose(-1, -2), groups=n * 3)
    x = xs.reshape_as(x)
    gain = 1 + (torch.rand(n, 3, 1, 1, generator=g) - 0.5) * 0.1
    x = x * gain + torch.randn(x.shape, generator=g) * torch.rand(n, 1, 1, 1, generator=g) * 0.03
    return x.clamp(0, 1)


def iou_per_class(pred: Tensor, true: Tensor) -> list[float | None]:
    out: list[float | None] = []
    for c in range(len(CLASSES)):
        p, t = pred == c, true == c
        union = (p | t).sum()
        out.append(float((p & t).sum() / union) if union > 0 else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="rewrite/assets/toy_segmenter.pt")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    model = ToySegmenter()
    # Rare classes (reflections are ~0.1% of pixels) get weight ∝ frequency^-1/2, else they are never predicted.
    _, sample = render(params_from_z(torch.randn(512, Z_DIM, generator=torch.Generator().manual_seed(args.seed + 1))))
    freq = torch.bincount(sample.flatten(), minlength=len(CLASSES)).float().clamp_min(1) / sample.numel()
    class_weight = freq.rsqrt() / freq.rsqrt().mean()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps)
    t0 = time.time()
    bar = tqdm(range(args.steps), desc="segmenter")
    for _ in bar:
        z = torch.randn(args.batch, Z_DIM, generator=g)
        x, y = render(params_from_z(z))
        loss = F.cross_entropy(model(augment(x, g)), y, weight=class_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{float(loss):.4f}")
    seconds = time.time() - t0
    model.eval()
    zv = torch.randn(512, Z_DIM, generator=torch.Generator().manual_seed(12345))
    xv, yv = render(params_from_z(zv))
    pred = model.labels(xv)
    acc = float((pred == yv).float().mean())
    iou = iou_per_class(pred, yv)
    blurred = model.labels(F.avg_pool2d(F.pad(xv, (1, 1, 1, 1), mode="replicate"), 3, stride=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    card = {
        "what": "toy-world segmenter (U-Net), labels: " + ", ".join(CLASSES),
        "made_by": "python -m rewrite.toyworld.models.segmenter_training (experiments/train_toy_segmenter.py)",
        "args": vars(args),
        "train_seconds": round(seconds, 1),
        "class_weight": dict(zip(CLASSES, [round(float(w), 3) for w in class_weight], strict=True)),
        "heldout": "512 renders of z from seed 12345 (no augmentation)",
        "heldout_pixel_accuracy": acc,
        "heldout_iou": dict(zip(CLASSES, iou, strict=True)),
        "heldout_blurred": "the same renders after a 3x3 box blur (what a generator's soft output looks like)",
        "heldout_blurred_pixel_accuracy": float((blurred == yv).float().mean()),
        "heldout_blurred_iou": dict(zip(CLASSES, iou_per_class(blurred, yv), strict=True)),
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "bytes": out.stat().st_size,
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    print(json.dumps({"pixel_accuracy": acc, "seconds": round(seconds, 1), "bytes": card["bytes"]}))


if __name__ == "__main__":
    main()
