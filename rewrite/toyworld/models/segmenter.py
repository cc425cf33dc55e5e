"""A small U-Net that labels toy-world images (renders, generated or edited) per pixel.

It reads generated images for the paper-style "% of source-class pixels now target-class" figure;
trained on renders with light blur / noise / colour jitter (`rewrite/toyworld/models/segmenter_training.py`).
Weights: `rewrite/assets/toy_segmenter.pt` with a JSON card beside it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rewrite.core.checkpoints import load_state_dict_file
from rewrite.toyworld.world.labels import CLASSES


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ToySegmenter(nn.Module):
    """Images in [0, 1], (N, 3, 64, 64) -> class logits (N, len(CLASSES), 64, 64)."""

    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 48, 64)) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.enc1, self.enc2, self.enc3, self.mid = _block(3, w1), _block(w1, w2), _block(w2, w3), _block(w3, w4)
        self.dec3, self.dec2, self.dec1 = _block(w4 + w3, w3), _block(w3 + w2, w2), _block(w2 + w1, w1)
        self.head = nn.Conv2d(w1, len(CLASSES), 1)

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(x * 2 - 1)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        m = self.mid(F.max_pool2d(e3, 2))

        def up(t: Tensor, skip: Tensor) -> Tensor:
            return torch.cat([F.interpolate(t, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1)

        d3 = self.dec3(up(m, e3))
        d2 = self.dec2(up(d3, e2))
        return self.head(self.dec1(up(d2, e1)))

    @torch.no_grad()
    def labels(self, images: Tensor, batch_size: int = 128) -> Tensor:
        """(N, 64, 64) class ids for images in [0, 1]."""
        return torch.cat([self(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def segmenter_path() -> Path:
    return Path(str(resources.files("rewrite") / "assets" / "toy_segmenter.pt"))


def load_toy_segmenter(checkpoint: str | None = None) -> ToySegmenter:
    model = ToySegmenter()
    load_state_dict_file(model, checkpoint or segmenter_path())
    return model.eval().requires_grad_(False)
