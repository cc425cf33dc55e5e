"""The edit request: copy a region of one generated image, paste it into another, say where it applies.

YAML / JSON form (regions at image resolution; a box is [x0, y0, x1, y1) in pixels, or a mask image):

    name: eyeglasses
    copy:  {seed: 35, box: [8, 16, 56, 32]}
    paste: {seed: 57, box: [8, 16, 56, 32]}      # same size as the copy's bounding box
    context: [{seed: 41, box: [8, 16, 56, 32]}, {seed: 1, mask: masks/eyes_1.png}]
    heldout: [{seed: 100, box: [8, 16, 56, 32]}]  # evaluation only: never seen by the edit
    context_includes_paste: true                  # default: the paste region is a context region too

The paste region joins the context by default, as in the original code (whose default context is
the paste region itself): the update directions must see the keys they are meant to change.

An erase request (`kind: erase`, the paper's watermark experiment) has no copy: `paste` marks what
to remove on the target seed, and the `units` value channels most active in the marked regions
(paste + context) are switched off there (see `rewrite.core.erase`); `contrast` regions (optional) show
the same place without the thing, and units are then ranked against them instead of against
everything outside the marked regions (eye boxes without glasses, so glasses units win over eye units):

    name: no_glasses
    kind: erase
    units: 8
    paste: {seed: 35, box: [8, 16, 56, 32]}
    context: [{seed: 4, box: [8, 16, 56, 32]}]
    contrast: [{seed: 0, box: [8, 16, 56, 32]}]
    heldout: [{seed: 34, box: [8, 16, 56, 32]}]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class EditRequestError(ValueError):
    """A malformed or impossible edit request."""


@dataclass(frozen=True)
class Region:
    """A seed's image plus a region of it: a box or a mask image."""

    seed: int
    box: tuple[int, int, int, int] | None = None
    mask_path: str | None = None

    def mask(self, size: int) -> Tensor:
        """(size, size) float mask in [0, 1] at image resolution."""
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            m = torch.zeros(size, size)
            m[y0:y1, x0:x1] = 1.0
            return m
        assert self.mask_path is not None
        m = read_mask(self.mask_path)
        if m.shape != (size, size):
            raise EditRequestError(f"mask {self.mask_path} is {m.shape[1]}x{m.shape[0]}; "
                                   f"the generator's images are {size}x{size}")
        if not (m > 0).any():
            raise EditRequestError(f"mask {self.mask_path} is empty")
        return m

    def validate(self, size: int, what: str) -> None:
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if x1 <= x0 or y1 <= y0:
                raise EditRequestError(f"{what}: box {list(self.box)} is empty (need x0 < x1 and y0 < y1)")
            if x0 < 0 or y0 < 0 or x1 > size or y1 > size:
                raise EditRequestError(f"{what}: box {list(self.box)} lies outside the {size}x{size} image")
        else:
            self.mask(size)

    def bbox(self, size: int) -> tuple[int, int, int, int]:
        if self.box is not None:
            return self.box
        ys, xs = torch.nonzero(self.mask(size) > 0, as_tuple=True)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def read_mask(path: str) -> Tensor:
    """(H, W) float mask in [0, 1] from an image file: each pixel the fraction its value encodes at the image's own
    bit depth (1-bit, 8-bit, 16-bit integers; a float image must hold fractions), so 50% reads 0.5 at any depth.
    Colour images count by their 8-bit luminance."""
    import numpy as np
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
    except Exception as e:
        raise EditRequestError(f"cannot read mask image {path}: {e}") from e
    if img.mode == "1":
        return torch.from_numpy(np.asarray(img, dtype=np.float32))
    if img.mode.startswith("I"):  # "I;16*": 16-bit PNG/TIFF; "I": 16-bit PNG as older Pillow opens it
        a = np.asarray(img).astype(np.float64)
        if a.min() < 0 or a.max() > 65535:
            raise EditRequestError(f"mask {path}: a {img.mode} mask must hold 16-bit values (0 to 65535), "
                                   f"got {a.min():g} to {a.max():g}")
        return torch.from_numpy(a / 65535).float()
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float32)
        if not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
            raise EditRequestError(f"mask {path}: a floating-point mask must hold fractions in [0, 1]")
        return torch.from_numpy(a.copy())
    return torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float32) / 255)


def resample(mask: Tensor, h: int, w: int) -> Tensor:
    """Fraction of each (h, w) cell covered by an image-resolution mask (area resampling)."""
    if mask.shape == (h, w):
        return mask.clone()
    return F.adaptive_avg_pool2d(mask[None, None], (h, w))[0, 0]


KINDS = ("paste", "erase")


@dataclass(frozen=True)
class EditRequest:
    name: str
    copy: Region | None  # None for an erase request (nothing is copied)
    paste: Region
    context: tuple[Region, ...] = ()
    heldout: tuple[Region, ...] = field(default_factory=tuple)
    context_includes_paste: bool = True
    kind: str = "paste"  # paste | erase
    units: int = 8  # erase only: how many value channels to switch off
    contrast: tuple[Region, ...] = ()  # erase only: the same place without the thing (picks units by contrast)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EditRequestError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.kind == "paste" and self.copy is None:
            raise EditRequestError("edit request needs a 'copy' region (or kind: erase, which copies nothing)")
        if self.kind == "erase" and self.copy is not None:
            raise EditRequestError("an erase request has no 'copy' region: 'paste' marks what to erase; "
                                   "drop 'copy' or use kind: paste")
        if self.kind == "paste" and self.contrast:
            raise EditRequestError("'contrast' regions belong to erase requests (kind: erase)")
        if not isinstance(self.units, int) or isinstance(self.units, bool) or self.units < 1:
            raise EditRequestError(f"units must be an integer ≥ 1, got {self.units!r}")

    @property
    def is_erase(self) -> bool:
        return self.kind == "erase"

    @property
    def source(self) -> Region:
        """The copied region of a paste request (an erase request has none: a clear error)."""
        if self.copy is None:
            raise EditRequestError(f"edit request {self.name!r} is an erase request: it has no copied region")
        return self.copy

    @property
    def context_regions(self) -> tuple[Region, ...]:
        """The regions that choose the update directions: the paste region first (unless switched
        off), then the listed context regions, without repeating the paste region."""
        if not self.context_includes_paste:
            return self.context
        return (self.paste,) + tuple(r for r in self.context if r != self.paste)

    # --- parsing ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | Path = ".") -> EditRequest:
        if not isinstance(data, Mapping):
            raise EditRequestError(f"an edit request must be a mapping, got {type(data).__name__}")
        known = {"name", "kind", "copy", "paste", "context", "heldout", "context_includes_paste", "units", "contrast",
                 "file"}
        extra = set(data) - known
        if extra:
            raise EditRequestError(f"unknown edit request fields {sorted(extra)}; expected {sorted(known - {'file'})}")
        kind = data.get("kind", "paste")
        if kind == "paste" and data.get("units") is not None:
            raise EditRequestError("'units' belongs to erase requests (kind: erase); a paste request has none")
        if data.get("paste") is None:
            raise EditRequestError("edit request needs a 'paste' region")

        def region(d: Any, what: str) -> Region:
            if not isinstance(d, Mapping) or "seed" not in d:
                raise EditRequestError(f"{what} must be a mapping with a 'seed' and a 'box' or 'mask'")
            extra = set(d) - {"seed", "box", "mask"}
            if extra:
                raise EditRequestError(f"{what}: unknown fields {sorted(extra)}")
            if ("box" in d) == ("mask" in d):
                raise EditRequestError(f"{what} needs exactly one of 'box' or 'mask'")
            if not isinstance(d["seed"], int) or isinstance(d["seed"], bool):
                raise EditRequestError(f"{what}: seed must be an integer, got {d['seed']!r}")
            if "box" in d:
                box = d["box"]
                if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(isinstance(v, int) for v in box):
                    raise EditRequestError(f"{what}: box must be four integers [x0, y0, x1, y1], got {box!r}")
                return Region(int(d["seed"]), box=tuple(int(v) for v in box))  # type: ignore[arg-type]
            return Region(int(d["seed"]), mask_path=str(Path(base_dir) / str(d["mask"])))

        def regions(key: str) -> tuple[Region, ...]:
            items = data.get(key) or []
            if not isinstance(items, (list, tuple)):
                raise EditRequestError(f"{key} must be a list of regions")
            return tuple(region(d, f"{key}[{i}]") for i, d in enumerate(items))

        include = data.get("context_includes_paste", True)
        if not isinstance(include, bool):
            raise EditRequestError(f"context_includes_paste must be true or false, got {include!r}")
        copy = region(data["copy"], "copy") if data.get("copy") is not None else None
        return cls(name=str(data.get("name", "edit")), copy=copy, paste=region(data["paste"], "paste"),
                   context=regions("context"), heldout=regions("heldout"), context_includes_paste=include,
                   kind=kind, units=8 if data.get("units") is None else data["units"], contrast=regions("contrast"))

    @classmethod
    def load(cls, path: str | Path) -> EditRequest:
        """From a .yaml/.yml/.json file; mask paths are relative to the file. Every error names the file, and
        the line where the parser gives one."""
        path = Path(path)
        if not path.is_file():
            raise EditRequestError(f"edit request file not found: {path}")
        try:
            raw = path.read_bytes()
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise EditRequestError(f"cannot read edit request file {path}: line {line}: not UTF-8 text "
                                   f"(byte {raw[e.start]:#04x})") from e
        except OSError as e:
            raise EditRequestError(f"cannot read edit request file {path}: {e.strerror}") from e
        if path.suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise EditRequestError(f"cannot read edit request file {path}: line {e.lineno}: {e.msg}") from e
        else:
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f"line {mark.line + 1}: " if mark is not None else ""
                raise EditRequestError(f"cannot read edit request file {path}: {where}"
                                       f"{getattr(e, 'problem', None) or e}") from e
        try:
            return cls.from_dict(data, base_dir=path.parent)
        except EditRequestError as e:
            raise EditRequestError(f"edit request file {path}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """The request in the form `from_dict` reads: what an edit file records as the request used, whatever it
        came from (a config, a file, a factory)."""

        def region(r: Region) -> dict[str, Any]:
            return {"seed": r.seed, **({"box": list(r.box)} if r.box is not None else {"mask": r.mask_path})}

        out: dict[str, Any] = {"name": self.name, "kind": self.kind,
                               "copy": region(self.copy) if self.copy is not None else None,
                               "paste": region(self.paste), "context": [region(r) for r in self.context],
                               "heldout": [region(r) for r in self.heldout],
                               "context_includes_paste": self.context_includes_paste}
        if self.is_erase:
            out.update(units=self.units, contrast=[region(r) for r in self.contrast])
        return out

    # --- checks -------------------------------------------------------------------------
    def validate(self, size: int) -> None:
        """Every region inside the image and non-empty; the paste box fits the copied content."""
        if self.copy is not None:
            self.copy.validate(size, "copy")
        self.paste.validate(size, "paste")
        for i, r in enumerate(self.contrast):
            r.validate(size, f"contrast[{i}]")
        for i, r in enumerate(self.context):
            r.validate(size, f"context[{i}]")
        for i, r in enumerate(self.heldout):
            r.validate(size, f"heldout[{i}]")
        if self.copy is None:
            return
        cx0, cy0, cx1, cy1 = self.copy.bbox(size)
        px0, py0, px1, py1 = self.paste.bbox(size)
        if (cx1 - cx0, cy1 - cy0) != (px1 - px0, py1 - py0):
            raise EditRequestError(
                f"paste region is {px1 - px0}x{py1 - py0} px but the copied region's bounding box is "
                f"{cx1 - cx0}x{cy1 - cy0} px; they must be the same size"
            )

    def paste_offset(self, size: int) -> tuple[int, int]:
        cx0, cy0, _, _ = self.source.bbox(size)
        px0, py0, _, _ = self.paste.bbox(size)
        return px0 - cx0, py0 - cy0
