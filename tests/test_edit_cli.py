"""Edit files and `rewrite-edit`: apply, stack, undo, export; refusals on the wrong base or a bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from rewrite.cli import run
from rewrite.editfile.artifact import EditArtifact
from rewrite.editfile.cli import main as cli
from rewrite.generators.tiny import tiny_generator
from rewrite.pipeline import CONF_DIR


def _run(tmp: Path, name: str, checkpoint: Path, layer: str, value_at: str) -> Path:
    """A real run of the tiny generator loaded from `checkpoint`; returns its folder (full weights kept)."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[
            "generator=tiny", "edit=tiny_box", "strategy=closed_form", "logger=none", "progress=false",
            f"+generator.model.checkpoint={checkpoint}", f"generator.layer={layer}", f"generator.value_at={value_at}",
            "stats.num_samples=32", "stats.batch_size=16", "eval.perceptual=null", "save_full_weights=true",
            f"stats.cache_dir={tmp / 'cache'}", f"+output_dir={tmp / name}"])
    run(cfg)
    return tmp / name


def _state(path: Path, key: str | None = "g_ema") -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj[key] if key else obj


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """`rewrite-edit argv` as typed: a refusal is exit status 2 and one `rewrite-edit: error:` line on stderr
    (no traceback); returns that line."""
    with pytest.raises(SystemExit) as exit_:
        cli(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("rewrite-edit: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Edit A (layer main.4) on the base, then edit B (main.7) on base + A: two runs one after the other."""
    tmp = tmp_path_factory.mktemp("edits")
    flat = tmp / "flat.pt"
    torch.save(tiny_generator().state_dict(), flat)
    a = _run(tmp, "run_a", flat, "main.4", "main.6")
    after_a = tmp / "after_a.pt"
    assert cli(["apply", str(flat), str(a / "edit.safetensors"), "-o", str(after_a)]) == 0
    b = _run(tmp, "run_b", after_a, "main.7", "null")
    base = tmp / "base.pt"  # the layout of a rosinality checkpoint: the state dict under a key, and more
    torch.save({"g_ema": torch.load(flat, weights_only=True), "latent_avg": torch.ones(1, 4), "step": 7}, base)
    return {"tmp": tmp, "base": base, "a": a / "edit.safetensors", "b": b / "edit.safetensors",
            "run_a": a / "edited_weights.safetensors", "run_b": b / "edited_weights.safetensors"}


def test_apply_gives_the_runs_own_weights_in_the_bases_layout(two_runs: dict[str, Path]) -> None:
    t = two_runs
    out = t["tmp"] / "applied.pt"
    assert cli(["apply", str(t["base"]), str(t["a"]), "-o", str(out)]) == 0
    obj = torch.load(out, map_location="cpu", weights_only=True)
    assert set(obj) == {"g_ema", "latent_avg", "step"} and obj["step"] == 7  # the rest of the file is kept
    assert _same(obj["g_ema"], load_file(str(t["run_a"])))  # bit for bit what the run itself produced
    art = EditArtifact.load(t["a"])
    assert art.kind == "low_rank" and t["a"].stat().st_size < 4096  # factors, not a model


def test_stack_of_two_equals_the_two_runs_and_undo_is_bit_exact(two_runs: dict[str, Path]) -> None:
    t, tmp = two_runs, two_runs["tmp"]
    stack = tmp / "s.stack.json"
    assert cli(["stack", str(t["base"]), str(t["a"]), "-o", str(stack)]) == 0
    assert cli(["stack", str(stack), str(t["b"]), "-o", str(stack)]) == 0  # extend the stack
    assert len(json.loads(stack.read_text())["edits"]) == 2
    assert cli(["export", str(stack), "-o", str(tmp / "ab.pt")]) == 0
    assert _same(_state(tmp / "ab.pt"), load_file(str(t["run_b"])))  # = edit A then edit B through runs
    assert cli(["undo", str(stack)]) == 0
    assert cli(["export", str(stack), "-o", str(tmp / "a.pt")]) == 0
    assert _same(_state(tmp / "a.pt"), load_file(str(t["run_a"])))
    assert cli(["undo", str(stack)]) == 0
    assert cli(["export", str(stack), "-o", str(tmp / "none.pt")]) == 0
    assert _same(_state(tmp / "none.pt"), _state(t["base"]))  # every edit undone: the base, bit for bit


def test_wrong_base_and_wrong_order_are_refused(two_runs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    t, tmp = two_runs, two_runs["tmp"]
    err = _refused(["apply", str(t["base"]), str(t["b"]), "-o", str(tmp / "x.pt")], capsys)  # B was made on base + A
    assert "does not apply to the base" in err and "sha256" in err and not (tmp / "x.pt").exists()
    assert "does not apply to the base" in _refused(["stack", str(t["base"]), str(t["b"]), str(t["a"]),
                                                     "-o", str(tmp / "y.json")], capsys)
    assert not (tmp / "y.json").exists()


def test_changed_files_corrupt_files_and_empty_undo_are_refused(two_runs: dict[str, Path],
                                                                capsys: pytest.CaptureFixture) -> None:
    t, tmp = two_runs, two_runs["tmp"]
    corrupt = tmp / "corrupt.safetensors"
    corrupt.write_bytes(t["a"].read_bytes()[:100])
    assert "not a readable edit file" in _refused(["apply", str(t["base"]), str(corrupt), "-o", str(tmp / "c.pt")],
                                                  capsys)
    base_copy = tmp / "base_copy.pt"
    base_copy.write_bytes(t["base"].read_bytes())
    stack = tmp / "t.stack.json"
    assert cli(["stack", str(base_copy), str(t["a"]), "-o", str(stack)]) == 0
    torch.save({"g_ema": {"w": torch.zeros(1)}}, base_copy)  # the base changes under the stack
    assert "changed since it joined the stack" in _refused(["export", str(stack), "-o", str(tmp / "d.pt")], capsys)
    empty = tmp / "e.stack.json"
    stack_data = json.loads(stack.read_text())
    empty.write_text(json.dumps({**stack_data, "edits": []}))
    assert "no edit to undo" in _refused(["undo", str(empty)], capsys)


def test_show_describes_an_edit(two_runs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert cli(["show", str(two_runs["a"])]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layer"] == "main.4.weight" and info["strategy"]["name"] == "closed_form"
    assert info["request"]["name"] == "tiny_box" and info["tensors"]["main.4.weight.directions"] == [16, 1]


def test_safetensors_base_several_edits_and_a_moved_stack(two_runs: dict[str, Path]) -> None:
    """A flat safetensors base takes both edits in one call; a stack folder moved elsewhere still exports."""
    from safetensors.torch import save_file

    t, tmp = two_runs, two_runs["tmp"]
    folder = tmp / "shared"
    folder.mkdir()
    base = folder / "base.safetensors"
    save_file({k: v.contiguous() for k, v in _state(t["base"]).items()}, str(base))
    for name in ("a", "b"):
        (folder / f"{name}.safetensors").write_bytes(t[name].read_bytes())
    out = tmp / "ab.safetensors"
    assert cli(["apply", str(base), str(folder / "a.safetensors"), str(folder / "b.safetensors"), "-o", str(out)]) == 0
    assert _same(load_file(str(out)), load_file(str(t["run_b"])))
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # a normal file, not owner-only
    assert cli(["stack", str(base), str(folder / "a.safetensors"), "-o", str(folder / "s.stack.json")]) == 0
    moved = folder.rename(tmp / "moved")  # the stack names its files relative to itself
    assert cli(["export", str(moved / "s.stack.json"), "-o", str(tmp / "a2.safetensors")]) == 0
    assert _same(load_file(str(tmp / "a2.safetensors")), load_file(str(t["run_a"])))


def test_outputs_that_cannot_be_written_are_refused_cleanly(two_runs: dict[str, Path],
                                                           capsys: pytest.CaptureFixture) -> None:
    t, tmp = two_runs, two_runs["tmp"]
    folder = tmp / "a_folder"
    folder.mkdir()
    assert "it is a folder" in _refused(["apply", str(t["base"]), str(t["a"]), "-o", str(folder)], capsys)
    assert list(folder.iterdir()) == []
    assert "must end like the base's" in _refused(["apply", str(t["base"]), str(t["a"]),
                                                   "-o", str(tmp / "x.safetensors")], capsys)  # other format
    assert "name a stack file *.json" in _refused(["stack", str(t["base"]), str(t["a"]), "-o", str(tmp / "s.stack")],
                                                  capsys)
    bad = tmp / "bad.stack.json"
    bad.write_text(json.dumps({"format": "rewrite-stack/1", "base": "b.pt", "edits": ["a"]}))
    assert "a stack needs base, base_sha256" in _refused(["export", str(bad), "-o", str(tmp / "z.pt")], capsys)
    assert not [p for p in tmp.iterdir() if p.name.endswith(".tmp.pt") or ".tmp." in p.name]  # no debris


def test_a_write_that_does_not_read_back_replaces_nothing(two_runs: dict[str, Path], capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint is read back and its tensors' sha256 compared before it replaces the old file, so a
    write gone wrong (a disk, a library) leaves the earlier export as it was."""
    t, tmp = two_runs, two_runs["tmp"]
    out = tmp / "verified.pt"
    assert cli(["apply", str(t["base"]), str(t["a"]), "-o", str(out)]) == 0
    good = out.read_bytes()
    real_save = torch.save

    def save_one_value_off(obj: dict, f: Path) -> None:
        state = {k: v.clone() for k, v in obj["g_ema"].items()}
        state["main.4.weight"].view(-1)[0] += 1
        real_save({**obj, "g_ema": state}, f)

    monkeypatch.setattr(torch, "save", save_one_value_off)
    err = _refused(["apply", str(t["base"]), str(t["a"]), "-o", str(out)], capsys)
    assert "does not read back as the weights meant for it" in err and out.read_bytes() == good
    assert not [p for p in tmp.iterdir() if ".tmp." in p.name]  # the temporary file is gone too


def test_apply_on_a_stack_file_keeps_its_members(two_runs: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """`apply STACK.json EDIT`: the stack's base and edits are inputs too, and the output keeps its base's format."""
    t, tmp = two_runs, two_runs["tmp"]
    stack = tmp / "u.stack.json"
    assert cli(["stack", str(t["base"]), str(t["a"]), "-o", str(stack)]) == 0
    base_bytes = t["base"].read_bytes()
    err = _refused(["apply", str(stack), str(t["b"]), "-o", str(t["base"])], capsys)
    assert "would overwrite the base checkpoint of stack" in err and t["base"].read_bytes() == base_bytes
    assert "must end like the base's" in _refused(["apply", str(stack), str(t["b"]),
                                                   "-o", str(tmp / "ub.safetensors")], capsys)
    assert cli(["apply", str(stack), str(t["b"]), "-o", str(tmp / "ub.pt")]) == 0
    assert _same(_state(tmp / "ub.pt"), load_file(str(t["run_b"])))


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
