"""Edit files and `rewrite-edit`: nothing lost, nothing silently wrong. Each case is typed as a user types it
(`rewrite-edit ...`, run in this process) where it is a command, and checks that the files the command was given
keep their bytes and that no output or temporary file appears.

`CASES` has the format of `tests/test_bad_inputs.py` (whose README test reads it): name -> (exception type, or None
for a logged warning, message substring, trigger(tmp_path)). A refused command is `SystemExit` (status 2) with the
message on stderr.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rewrite.core.files import state_fingerprint
from rewrite.editfile.artifact import EditArtifact
from rewrite.editfile.cli import main as rewrite_edit
from rewrite.generators.tiny import load_tiny
from rewrite.strategies.base import EditResult, LowRankDelta
from tests.conftest import warns_and_goes_on


def _state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_tiny().model.state_dict().items()}


def _low_rank(state: dict[str, torch.Tensor], lam_scale: float = 0.01, d_scale: float = 1.0,
              r: int = 1) -> EditArtifact:
    """A rank-r edit of `main.7.weight` (a Conv2d: (out, in, 3, 3), D acts on axis 1) made on `state`."""
    d = torch.eye(16)[:, :r] * d_scale
    lam = torch.full((16, r, 3, 3), lam_scale)
    return EditArtifact.from_result(EditResult({"main.7.weight": state["main.7.weight"]},
                                               LowRankDelta("main.7.weight", d, lam, 1)),
                                    state_fingerprint(state), "tiny_w16_s0")


def _files(tmp: Path, base_suffix: str = ".pt") -> dict[str, Path]:
    """A base checkpoint (the state dict under `g_ema`, as rosinality's; or a flat safetensors file), an edit A
    made on it, and edit B (of main.4) made on base + A."""
    state = _state()
    base = tmp / f"base{base_suffix}"
    if base_suffix == ".safetensors":
        save_file(state, str(base))
    else:
        torch.save({"g_ema": state, "latent_avg": torch.ones(1, 4), "step": 7}, base)
    a = _low_rank(state)
    after_a = {**state, **a.new_values(state)}
    b = EditArtifact.from_result(EditResult({"main.4.weight": after_a["main.4.weight"]},
                                            LowRankDelta("main.4.weight", torch.eye(16)[:, :1],
                                                         torch.full((1, 16, 4, 4), 0.01), 0)),
                                 state_fingerprint(after_a))
    return {"base": base, "a": a.save(tmp / "A.safetensors"), "b": b.save(tmp / "B.safetensors")}


def _stack(tmp: Path) -> dict[str, Path]:
    """`_files` plus `s.json`, the stack of A then B on the base."""
    f = _files(tmp)
    assert rewrite_edit(["stack", str(f["base"]), str(f["a"]), str(f["b"]), "-o", str(tmp / "s.json")]) == 0
    return {**f, "stack": tmp / "s.json"}


def _run_keeping(tmp: Path, *argv: str | Path) -> None:
    """`rewrite-edit argv`: whatever it does, every file already in `tmp` keeps its bytes, no new file appears
    (no output, no temporary file) and no file of `tmp` is lost."""
    before = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}
    try:
        rewrite_edit([str(a) for a in argv])
    finally:
        after = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}
        assert after == before, f"files changed: {sorted(str(p) for p in set(after) ^ set(before))}"


def _apply_edit(tmp: Path, edit: Path) -> None:
    """`rewrite-edit apply base.pt <edit> -o out.pt` with the base that `_files` writes."""
    _run_keeping(tmp, "apply", tmp / "base.pt", edit, "-o", tmp / "out.pt")


def _crafted(tmp: Path, art: EditArtifact) -> None:
    """Apply an edit file written as `art` (a file made by hand or by another program, not by a run)."""
    _files(tmp)
    _apply_edit(tmp, art.save(tmp / "crafted.safetensors"))


def _with_metadata(tmp: Path, **changes: str | None) -> None:
    """Apply edit A with its metadata entries changed (None: removed), tensors and checksum intact."""
    path = _files(tmp)["a"]
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    meta = {k: v for k, v in {**meta, **changes}.items() if v is not None}
    save_file(load_file(str(path)), str(path), metadata=meta)
    _apply_edit(tmp, path)


def _header(path: Path) -> tuple[dict, bytes]:
    """A safetensors file's JSON header and its tensor data."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write_header(path: Path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def _metadata_not_text(tmp: Path) -> None:
    path = _files(tmp)["a"]
    header, data = _header(path)
    header["__metadata__"]["in_axis"] = 1  # safetensors metadata holds strings only
    _write_header(path, header, data)
    _apply_edit(tmp, path)


def _flipped_bits(tmp: Path) -> None:
    """Two bits of Λ's data flipped (the exponent's top bits of a float32: 0.01 becomes about 3e36)."""
    path = _files(tmp)["a"]
    header, data = _header(path)
    start = header["main.7.weight.lam"]["data_offsets"][0]
    data = bytearray(data)
    data[start + 3] ^= 0x40
    data[start + 7] ^= 0x40
    _write_header(path, header, bytes(data))
    _apply_edit(tmp, path)


def _nan_edit(tmp: Path) -> None:
    """An edit file with NaN factors (as a diverging fit wrote before edit files were checked), checksum valid."""
    path = _files(tmp)["a"]
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["main.7.weight.lam"][0, 0, 0, 0] = float("nan")
    save_file(tensors, str(path), metadata={**meta, "tensors_sha256": state_fingerprint(tensors)})
    _apply_edit(tmp, path)


def _without_checksum(tmp: Path) -> None:
    """Not an error: a file written before edit files had a checksum applies, with a warning."""
    path = _files(tmp)["a"]
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    del meta["tensors_sha256"]
    save_file(load_file(str(path)), str(path), metadata=meta)
    assert rewrite_edit(["apply", str(tmp / "base.pt"), str(path), "-o", str(tmp / "out.pt")]) == 0
    state = _state()
    want = {**state, **EditArtifact.load(path).new_values(state)}
    got = torch.load(tmp / "out.pt", weights_only=True)["g_ema"]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def _nan_base(tmp: Path) -> None:
    """A base holding NaN (an edit made on exactly that base): the export would carry the NaN on."""
    state = _state()
    state["main.2.running_mean"][0] = float("nan")
    torch.save({"g_ema": state}, tmp / "base.pt")
    _apply_edit(tmp, _low_rank(state).save(tmp / "A.safetensors"))


def _hard_link_to_base(tmp: Path) -> None:
    f = _files(tmp)
    os.link(f["base"], tmp / "link.pt")  # another name of the same file
    _run_keeping(tmp, "apply", tmp / "link.pt", f["a"], "-o", f["base"])


def _not_a_stack(tmp: Path) -> None:
    f = _files(tmp)
    (tmp / "config.json").write_text('{"lr": 0.1}\n')
    _run_keeping(tmp, "stack", f["base"], f["a"], "-o", tmp / "config.json")


def _onto_another_edit_file(tmp: Path) -> None:
    f = _files(tmp, ".safetensors")
    _run_keeping(tmp, "apply", f["base"], f["a"], "-o", f["b"])  # B is an edit file, but not an input here


def _stack_case(argv: Callable[[dict[str, Path]], list[str | Path]]) -> Callable[[Path], None]:
    """A trigger: `rewrite-edit <argv(files)>` on the files of `_stack`."""
    return lambda tmp: _run_keeping(tmp, *argv(_stack(tmp)))


def _files_case(argv: Callable[[dict[str, Path]], list[str | Path]], base_suffix: str = ".pt"
                ) -> Callable[[Path], None]:
    """A trigger: `rewrite-edit <argv(files)>` on the files of `_files`."""
    return lambda tmp: _run_keeping(tmp, *argv(_files(tmp, base_suffix)))


CASES: dict[str, tuple[type[BaseException] | None, str, Callable[..., object]]] = {
    "export_onto_its_base": (SystemExit, "would overwrite the base checkpoint of stack",
                             _stack_case(lambda f: ["export", f["stack"], "-o", f["base"]])),
    "export_onto_an_edit_of_its_stack": (SystemExit, "would overwrite an edit file of stack",
                                         _stack_case(lambda f: ["export", f["stack"], "-o", f["a"]])),
    "export_onto_its_stack_file": (SystemExit, "would overwrite the stack file being read",
                                   _stack_case(lambda f: ["export", f["stack"], "-o", f["stack"]])),
    "apply_onto_the_edit_file": (SystemExit, "would overwrite an edit file being applied",
                                 _files_case(lambda f: ["apply", f["base"], f["a"], "-o", f["a"]], ".safetensors")),
    "apply_onto_a_link_to_the_base": (SystemExit, "would overwrite the base checkpoint (", _hard_link_to_base),
    "apply_onto_another_edit_file": (SystemExit, "is an edit file; apply would replace it with a checkpoint",
                                     _onto_another_edit_file),
    "apply_output_named_json": (SystemExit, "apply writes a checkpoint, so name it like the base",
                                _files_case(lambda f: ["apply", f["base"], f["a"], "-o", f["base"].parent / "e.json"])),
    "undo_onto_the_stacks_base": (SystemExit, "would overwrite the base checkpoint of stack",
                                  _stack_case(lambda f: ["undo", f["stack"], "-o", f["base"]])),
    "undo_onto_a_checkpoint": (SystemExit, "name a stack file *.json",
                               _stack_case(lambda f: ["undo", f["stack"], "-o", f["base"].parent / "other.pt"])),
    "stack_onto_a_json_that_is_no_stack": (SystemExit, "exists and is not a stack file; refusing to overwrite it",
                                           _not_a_stack),
    "nan_edit_apply": (SystemExit, "holds NaN/Inf; only finite numbers may become weights", _nan_edit),
    "edit_overflows_to_inf": (SystemExit, "would be NaN/Inf (from applying the edit",
                              lambda tmp: _crafted(tmp, _low_rank(_state(), lam_scale=1e38, d_scale=1e38))),
    "nan_base_apply": (SystemExit, "would be NaN/Inf (from the base", _nan_base),
    "nan_factors_at_save": (ValueError, "refusing to save edit file",
                            lambda tmp: _low_rank(_state(), lam_scale=float("nan")).save(tmp / "e.safetensors")),
    "flipped_bits_in_edit_tensor": (SystemExit, "was changed or corrupted", _flipped_bits),
    "edit_file_without_checksum": (None, "has no checksum of its tensors", _without_checksum),
    "edit_factors_wrong_shape": (SystemExit, "do not fit the base weight of shape",
                                 lambda tmp: _crafted(tmp, EditArtifact(
                                     "low_rank", "main.7.weight", state_fingerprint(_state()),
                                     {"main.7.weight.lam": torch.zeros(16, 1, 5, 5),
                                      "main.7.weight.directions": torch.eye(16)[:, :1]}, 1))),
    "edit_factors_malformed": (SystemExit, "malformed low-rank factors",
                               lambda tmp: _crafted(tmp, EditArtifact(
                                   "low_rank", "main.7.weight", state_fingerprint(_state()),
                                   {"main.7.weight.lam": torch.zeros(16, 2, 3, 3),
                                    "main.7.weight.directions": torch.eye(16)[:, :1]}, 1))),
    "edit_value_wrong_shape": (SystemExit, "main.7.bias: the edit holds shape (3,), the base (16,)",
                               lambda tmp: _crafted(tmp, EditArtifact(
                                   "replace", "main.7.bias", state_fingerprint(_state()),
                                   {"main.7.bias.value": torch.zeros(3)}))),
    "edit_without_metadata": (SystemExit, "is not a rewrite edit file (format None",
                              lambda tmp: _with_metadata(tmp, format=None, kind=None, layer=None, base_sha256=None,
                                                         in_axis=None, model=None, changed=None, strategy=None,
                                                         request=None, tensors_sha256=None)),
    "edit_metadata_missing_key": (SystemExit, "the edit file's metadata has no 'layer'",
                                  lambda tmp: _with_metadata(tmp, layer=None)),
    "edit_metadata_malformed_json": (SystemExit, "metadata 'request' is not valid JSON",
                                     lambda tmp: _with_metadata(tmp, request='{"name": "x",')),
    "edit_metadata_wrong_json_type": (SystemExit, "metadata 'strategy' must be a JSON object, got list",
                                      lambda tmp: _with_metadata(tmp, strategy="[1, 2]")),
    "edit_metadata_wrong_type": (SystemExit, "metadata 'in_axis' must be an integer, got 'one'",
                                 lambda tmp: _with_metadata(tmp, in_axis="one")),
    "edit_metadata_not_text": (SystemExit, "is not a readable edit file", _metadata_not_text),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_edit_file_input_gets_its_error(case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                            capsys: pytest.CaptureFixture) -> None:
    exc, message, trigger = CASES[case]
    if exc is None:  # not an error: a logged warning, and the work goes on
        warns_and_goes_on(caplog, message, lambda: trigger(tmp_path))
        return
    with pytest.raises(exc) as raised:
        trigger(tmp_path)
    if exc is SystemExit:  # a refused command: exit status 2, one line on stderr, no traceback
        err = capsys.readouterr().err
        assert raised.value.code == 2 and err.startswith("rewrite-edit: error: ") and err.count("\n") == 1, err
        assert message in err
    else:
        assert message in str(raised.value)
