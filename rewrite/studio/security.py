"""The studio's one folder: every file it reads back from a request or serves lies inside it.

Why: the studio is a web server. Anything a page sends (a file name to download, a mask path inside an
imported request, an uploaded image) must not reach other files on the machine, and an uploaded image must
not exhaust memory. So paths are resolved (links and `..` included) and must stay under the output folder,
uploads are stored under names the studio chooses (never the client's), and a mask upload is decoded only
after its size, format and dimensions are checked.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

MAX_MASK_BYTES = 1 << 20  # an upload larger than 1 MiB is refused before it is decoded
MASK_FORMATS = ("PNG", "BMP", "GIF")  # lossless: a mask's edges must survive


class StudioError(ValueError):
    """Bad input from the page: shown as one line on the page, and the server goes on."""


def inside(root: Path, relative: str | Path) -> Path:
    """`root / relative`, resolved; refused unless it lies inside `root` (no `..`, absolute path or link out)."""
    base = root.resolve()
    rel = Path(relative)
    if rel.is_absolute():
        raise StudioError(f"{relative}: an absolute path is not allowed; name a file inside the studio folder")
    path = (base / rel).resolve()
    if path != base and base not in path.parents:
        raise StudioError(f"{relative}: outside the studio folder")
    return path


def check_mask_path(root: Path, path: str | Path) -> Path:
    """A mask path of a request (relative to `root`, or absolute) that must name a file inside `root`."""
    p = Path(path)
    resolved = p.resolve() if p.is_absolute() else (root / p).resolve()
    base = root.resolve()
    if base not in resolved.parents:
        raise StudioError(f"mask {path}: masks must lie inside the studio folder {root}")
    if not resolved.is_file():
        raise StudioError(f"mask {path}: no such file")
    return resolved


def save_mask(root: Path, data: bytes, size: int) -> Path:
    """Store an uploaded mask image under `root/masks/<sha256>.png` (re-encoded as 8-bit grey PNG).

    Refused: more than `MAX_MASK_BYTES`, not a PNG/BMP/GIF image, dimensions other than the generator's
    `size`×`size` (checked from the header, before the pixels are decoded), or no marked pixel.
    """
    if len(data) > MAX_MASK_BYTES:
        raise StudioError(f"mask upload is {len(data)} bytes; at most {MAX_MASK_BYTES} are accepted")
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format
    except Exception as e:  # PIL raises several kinds for non-images
        raise StudioError(f"the upload is not an image ({type(e).__name__})") from None
    if fmt not in MASK_FORMATS:
        raise StudioError(f"mask upload is {fmt or 'unknown'}; use one of {', '.join(MASK_FORMATS)} (lossless)")
    if img.size != (size, size):
        raise StudioError(f"mask upload is {img.size[0]}x{img.size[1]}; the generator's images are {size}x{size}")
    try:
        grey = np.asarray(img.convert("L"), dtype=np.uint8)
    except Exception as e:
        raise StudioError(f"cannot decode the mask image ({type(e).__name__})") from None
    if not (grey > 0).any():
        raise StudioError("the mask upload marks no pixel (all black)")
    out = io.BytesIO()
    Image.fromarray(grey, mode="L").save(out, format="PNG")
    png = out.getvalue()
    folder = root / "masks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(png).hexdigest()[:16]}.png"
    path.write_bytes(png)
    return path
