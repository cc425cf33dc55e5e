"""Pictures for the page: generator images and heat maps as small PNGs.

Images are sent at the generator's own resolution (a 64×64 PNG is about 5 KB) and scaled up by the browser
without smoothing, so the page's mouse coordinates map one to one onto the image pixels the request uses.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor


def png(img: Tensor) -> bytes:
    """(3, S, S) image in [-1, 1] -> PNG bytes."""
    a = ((img.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a), mode="RGB").save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def heat_overlay(img: Tensor, heat: Tensor, strength: float = 0.75) -> Tensor:
    """The image darkened where the heat map is cold and tinted orange where it is hot.

    `heat` is (h, w) in [0, 1] at the layer's key grid; it is upsampled (nearest: one cell = one block of
    pixels, as the layer sees it) to the image size. Returns a (3, S, S) image in [-1, 1].
    """
    size = img.shape[-1]
    h = F.interpolate(heat[None, None].float(), size=(size, size), mode="nearest")[0, 0].clamp(0, 1)
    base = (img.detach().cpu().clamp(-1, 1) + 1) / 2  # [0, 1]
    cold = base.mean(0, keepdim=True).expand(3, -1, -1) * 0.6  # dimmed grey: the direction is quiet here
    hot = base * (1 - strength) + torch.tensor([1.0, 0.55, 0.0])[:, None, None] * strength
    out = cold * (1 - h) + hot * h
    return out * 2 - 1
