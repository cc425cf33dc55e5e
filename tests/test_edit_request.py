"""Edit requests: parsing, clear errors, resampling regions to a layer's resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


@pytest.mark.parametrize(
    ("array", "fraction"),
    [
        (np.full((16, 16), 32768, dtype=np.uint16), 32768 / 65535),  # a 16-bit PNG at 50% (read 1.0 before)
        (np.full((16, 16), 65535, dtype=np.uint16), 1.0),
        (np.full((16, 16), 128, dtype=np.uint8), 128 / 255),
        (np.ones((16, 16), dtype=bool), 1.0),  # 1-bit
    ],
)
def test_masks_read_as_the_fraction_they_encode_at_any_bit_depth(tmp_path: Path, array: np.ndarray,
                                                                 fraction: float) -> None:
    Image.fromarray(array).save(tmp_path / "m.png")
    mask = EditRequest.from_dict(req(copy={"seed": 1, "mask": "m.png"}), tmp_path).copy.mask(16)
    assert mask.dtype == torch.float32 and torch.allclose(mask, torch.full((16, 16), fraction))


def test_a_float_mask_holds_fractions(tmp_path: Path) -> None:
    Image.fromarray(np.full((16, 16), 0.25, dtype=np.float32)).save(tmp_path / "m.tiff")
    assert torch.equal(EditRequest.from_dict(req(copy={"seed": 1, "mask": "m.tiff"}), tmp_path).copy.mask(16),
                       torch.full((16, 16), 0.25))
    Image.fromarray(np.full((16, 16), np.nan, dtype=np.float32)).save(tmp_path / "nan.tiff")
    with pytest.raises(EditRequestError, match=r"nan.tiff: a floating-point mask must hold fractions in \[0, 1\]"):
        EditRequest.from_dict(req(copy={"seed": 1, "mask": "nan.tiff"}), tmp_path).validate(16)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("r.json", b'{"name": "t",\n "copy": {"seed": 1, "box": [4, 4, 8, 8]}\n "paste": 1}', "line 3: Expecting ','"),
        ("r.yaml", b"name: t\ncopy: {seed: 1, box: [4, 4, 8, 8]\npaste: 1\n", "line 3: expected ',' or '}'"),
        ("r.yml", b"name: t\n\n\nnote: \xff\n", "line 4: not UTF-8 text (byte 0xff)"),
        ("r.yaml", b"", "an edit request must be a mapping, got NoneType"),  # an empty file
        ("r.json", b'{"paste": {"seed": 2, "box": [8, 8, 12, 12]}, "colour": 1}', "unknown edit request fields"),
    ],
)
def test_request_file_errors_name_the_file_and_line(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(EditRequestError) as err:
        EditRequest.load(tmp_path / name)
    assert str(tmp_path / name) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    "data",
    [
        req(context=[{"seed": 3, "mask": "m.png"}], heldout=[{"seed": 9, "box": [0, 0, 4, 4]}],
            context_includes_paste=False),
        {"name": "e", "kind": "erase", "units": 3, "paste": {"seed": 2, "box": [8, 8, 12, 12]},
         "contrast": [{"seed": 4, "box": [8, 8, 12, 12]}]},
    ],
)
def test_to_dict_is_what_from_dict_reads(tmp_path: Path, data: dict) -> None:
    """An edit file records `to_dict()`: it must rebuild the same request, mask paths included."""
    request = EditRequest.from_dict(data, tmp_path)
    again = EditRequest.from_dict(json.loads(json.dumps(request.to_dict())))
    assert again == request
    if request.context:
        assert again.context[0].mask_path == str(tmp_path / "m.png")
