"""Edit requests: parsing, clear errors, resampling regions to a layer's resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from rewrite.core.problem import paste, select, shift
from rewrite.core.request import EditRequest, EditRequestError, resample

BOX = {"seed": 1, "box": [4, 4, 8, 8]}


def req(**over: object) -> dict:
    d = {"name": "t", "copy": dict(BOX), "paste": {"seed": 2, "box": [8, 8, 12, 12]}}
    d.update(over)
    return d


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (req(copy={"seed": 1, "box": [4, 4, 4, 8]}), "empty"),
        (req(paste={"seed": 2, "box": [14, 14, 18, 18]}), "outside"),
        (req(paste={"seed": 2, "box": [-1, 0, 3, 4]}), "outside"),
        (req(paste={"seed": 2, "box": [8, 8, 13, 12]}), "same size"),
        (req(context=[{"seed": 3, "box": [0, 0, 0, 2]}]), "context\\[0\\].*empty"),
    ],
)
def test_invalid_regions_are_reported(data: dict, message: str) -> None:
    with pytest.raises(EditRequestError, match=message):
        EditRequest.from_dict(data).validate(16)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"copy": BOX}, "needs a 'paste'"),
        (req(colour=1), "unknown edit request fields"),
        (req(copy={"seed": 1}), "exactly one of 'box' or 'mask'"),
        (req(copy={"seed": "a", "box": [0, 0, 1, 1]}), "seed must be an integer"),
        (req(copy={"seed": 1, "box": [0, 0, 1]}), "four integers"),
        (req(context={"seed": 1}), "must be a list"),
    ],
)
def test_malformed_requests_are_reported(data: dict, message: str) -> None:
    with pytest.raises(EditRequestError, match=message):
        EditRequest.from_dict(data)


def test_yaml_json_and_mask_files(tmp_path: Path) -> None:
    mask = torch.zeros(16, 16, dtype=torch.uint8)
    mask[4:8, 4:8] = 255
    Image.fromarray(mask.numpy()).save(tmp_path / "m.png")
    (tmp_path / "r.json").write_text(json.dumps(req(copy={"seed": 1, "mask": "m.png"})))
    (tmp_path / "r.yaml").write_text("copy: {seed: 1, mask: m.png}\npaste: {seed: 2, box: [8, 8, 12, 12]}\n")
    for name in ("r.json", "r.yaml"):
        r = EditRequest.load(tmp_path / name)
        r.validate(16)
        assert torch.equal(r.copy.mask(16), mask.float() / 255)
        assert r.paste_offset(16) == (4, 4)
    Image.fromarray(torch.zeros(16, 16, dtype=torch.uint8).numpy()).save(tmp_path / "empty.png")
    with pytest.raises(EditRequestError, match="empty"):
        EditRequest.from_dict(req(copy={"seed": 1, "mask": "empty.png"}), tmp_path).validate(16)
    with pytest.raises(EditRequestError, match="32x32"):
        EditRequest.from_dict(req(copy={"seed": 1, "mask": "m.png"}), tmp_path).validate(32)
    with pytest.raises(EditRequestError, match="not found"):
        EditRequest.load(tmp_path / "missing.yaml")


def test_resampling_to_layer_resolution() -> None:
    m = torch.zeros(16, 16)
    m[4:8, 4:10] = 1
    cover = resample(m, 4, 4)
    assert cover[1, 1] == 1 and cover[1, 2] == 0.5 and cover[0, 0] == 0
    assert select(m, 4, 4).sum() == 2  # cells covered at least half
    small = torch.zeros(16, 16)
    small[0:2, 1:4] = 1  # 6 of a 16-px cell: under half, over a quarter
    assert select(small, 4, 4).sum() == 1  # the best-covered cell
    tiny = torch.zeros(16, 16)
    tiny[0, 0] = 1  # 1 of 16 px: no cell
    with pytest.raises(ValueError, match="covers at most 6% of any 4x4 px cell"):
        select(tiny, 4, 4)


def test_paste_blends_at_the_offset() -> None:
    src = torch.arange(16.0).reshape(1, 1, 4, 4)
    dst = torch.zeros(1, 1, 4, 4)
    m = torch.zeros(16, 16)
    m[0:4, 0:4] = 1  # top-left cell at 4x4
    out, alpha = paste(src, dst, m, (8, 4), 16)  # 2 cells right, 1 down
    assert out[0, 0, 1, 2] == src[0, 0, 0, 0] and alpha[1, 2] == 1 and alpha.sum() == 1
    assert torch.equal(shift(src, -1, 0)[0, 0, 0, :3], src[0, 0, 0, 1:])
