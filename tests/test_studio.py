"""The studio's actions without a browser (`rewrite.studio.backend`, `runs`, `security`): every action, the bad
inputs the page must answer with one line, the run folder a run leaves, and that its exported request
reproduces the same metrics through `python -m rewrite`."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

from rewrite.core.problem import paste
from rewrite.core.request import EditRequest
from rewrite.editfile.artifact import EditArtifact
from rewrite.editfile.cli import main as rewrite_edit
from rewrite.pipeline import CONF_DIR
from rewrite.studio.backend import HELDOUT_COUNT, HELDOUT_START, Studio, normalize_box, placed_box
from rewrite.studio.security import MAX_MASK_BYTES, StudioError, check_mask_path, inside, save_mask

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parent.parent
TINY = ["stats.num_samples=64", "stats.batch_size=32", "eval.tol=0.005"]  # the tiny generator draws in a narrow range
TIMES = {"edit_time_s", "stats_time_s", "stats_cached", "torch_threads", "hydra_overrides"}


@pytest.fixture
def tiny(tmp_path: Path) -> Studio:
    studio = Studio(tmp_path / "studio", overrides=TINY)
    studio.load_model("tiny")
    return studio


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Studio:
    os.environ.setdefault("REWRITE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    studio = Studio(tmp_path_factory.mktemp("toy"), overrides=["stats.num_samples=200"])
    studio.load_model("toy_stylegan2")
    return studio


def drawn(studio: Studio) -> Studio:
    studio.set_copy(1, [10, 8, 4, 4])  # dragged from bottom-right to top-left
    studio.place_paste(2, (9, 10))
    return studio


def png_bytes(a: np.ndarray, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(a).save(out, format=fmt)
    return out.getvalue()


# --- model and gallery -------------------------------------------------------------------
def test_model_layers_and_gallery(tiny: Studio) -> None:
    assert {"tiny", "toy_stylegan2", "dcgan_face"} <= set(tiny.generators())
    m = tiny.require_model()
    assert m.layer == "main.4" and "main.4" in m.layers and m.size == 16
    assert tiny.page(1) == list(range(12, 24))
    imgs = tiny.images([3, 5])
    assert torch.allclose(imgs[0], m.adapter.generate(m.adapter.sample_z([3]))[0], atol=1e-6)
    with pytest.raises(StudioError, match="seed is a whole number"):
        tiny.images([-1])
    with pytest.raises(StudioError, match="no generator config"):
        tiny.load_model("../../etc/passwd")
    with pytest.raises(StudioError, match="cannot be edited here"):
        tiny.set_layer("main.5")


def test_a_users_config_dir_adds_generators(tmp_path: Path) -> None:
    (tmp_path / "conf" / "generator").mkdir(parents=True)
    (tmp_path / "conf" / "generator" / "my_tiny.yaml").write_text(
        "model: {_target_: rewrite.generators.tiny.load_tiny, z_dim: 16, width: 16, seed: 3}\n"
        "layer: main.4\nvalue_at: main.6\n")
    studio = Studio(tmp_path / "out", config_dir=tmp_path / "conf", overrides=TINY)
    assert "my_tiny" in studio.generators()
    assert studio.load_model("my_tiny").layer == "main.4"
    drawn(studio)
    assert f"--config-dir {tmp_path / 'conf'}" in studio.runs.run("rank_one").command


def test_toy_layers_and_strategy_defaults(toy: Studio) -> None:
    m = toy.require_model()
    assert m.layers == ["conv1", *(f"convs.{i}" for i in range(8))] and m.layer == "convs.4"
    assert m.key_grid == (16, 16)
    settings = toy.runs.strategy_settings("rank_one")  # the toy generator's tuned defaults
    tuned = OmegaConf.load(Path(CONF_DIR) / "generator" / "toy_stylegan2.yaml").tuned.rank_one
    assert settings["key_method"] == tuned.key_method and settings["memory_weight"] == tuned.memory_weight


# --- drawing the request -----------------------------------------------------------------
def test_boxes_from_drags_and_the_paste_goal(tiny: Studio) -> None:
    assert normalize_box([10.4, 8.6, 3.6, 4.2]) == (4, 4, 10, 9)
    assert placed_box((1, 15), 6, 4, 16) == (0, 12, 6, 16)  # moved inside the image
    drawn(tiny)
    assert tiny.draft.copy.box == (4, 4, 10, 8) and tiny.draft.paste.box == (6, 8, 12, 12)
    m = tiny.require_model()
    src, tgt = m.adapter.generate(m.adapter.sample_z([1, 2]))
    want, _ = paste(src[None], tgt[None], tiny.draft.copy.mask(16), (2, 4), 16)
    assert torch.allclose(tiny.goal(), want[0])
    assert torch.allclose(tiny.goal()[:, 8:12, 6:12], src[:, 4:8, 4:10], atol=1e-6)
    request = tiny.request()
    assert len(request.heldout) == HELDOUT_COUNT and all(r.box == (6, 8, 12, 12) for r in request.heldout)


@pytest.mark.parametrize(("action", "message"), [
    (lambda s: s.set_copy(1, [4, 4, 4, 9]), "copy box: box [4, 4, 4, 9] is empty"),
    (lambda s: s.set_copy(1, [10, 10, 20, 14]), "lies outside the 16x16 image"),
    (lambda s: s.set_copy(1, [4, 4, "a", 9]), "four numbers"),
    (lambda s: s.set_paste(2, [0, 0, 4, 4]), "draw the copy box first"),
    (lambda s: (s.set_copy(1, [4, 4, 10, 8]), s.set_paste(2, [0, 0, 5, 4])),
     "paste box is 5x4 px but the copy box is 6x4 px"),
    (lambda s: s.add_context(3, [5, 5, 5, 5]), "empty"),
    (lambda s: s.remove_context(0), "no context region 0"),
    (lambda s: s.heatmap([0]), "draw a copy box and a paste box first"),
    (lambda s: s.runs.run("rank_one"), "draw a copy box and a paste box first"),
    (lambda s: s.set_rule("rainbows"), "unknown toy rule"),
])
def test_bad_input_is_one_clear_line(tiny: Studio, action, message: str) -> None:
    with pytest.raises(StudioError, match=message.replace("[", r"\[").replace("]", r"\]")):
        action(tiny)


def test_a_region_too_small_for_the_layer(toy: Studio) -> None:
    toy.set_layer("conv1")  # 4x4 keys: a cell is 16x16 pixels
    try:
        with pytest.raises(StudioError, match="selects no feature cell of the layer's 4x4 key grid"):
            toy.set_copy(1, [0, 0, 3, 3])
    finally:
        toy.set_layer("convs.4")


def test_context_regions_and_masks(tiny: Studio) -> None:
    drawn(tiny)
    tiny.add_context(3, [4, 4, 12, 12])
    tiny.add_context(4, [4, 4, 12, 12])
    tiny.remove_context(0)
    assert [r.seed for r in tiny.draft.context] == [4]
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 2:10] = 255
    region = tiny.add_context(5, mask=png_bytes(mask))
    assert Path(region.mask_path).parent == tiny.out / "masks"
    assert torch.equal(region.mask(16), torch.from_numpy(mask / 255).float())
    assert len(tiny.request().context) == 2
    tiny.clear_context()
    assert tiny.draft.context == []


@pytest.mark.parametrize(("data", "message"), [
    (b"\x89PNG" + b"0" * MAX_MASK_BYTES, "at most"),
    (b"not an image", "not an image"),
    (png_bytes(np.full((32, 32), 255, np.uint8)), "32x32; the generator's images are 16x16"),
    (png_bytes(np.zeros((16, 16), np.uint8)), "marks no pixel"),
    (png_bytes(np.full((16, 16, 3), 255, np.uint8), "JPEG"), "JPEG; use one of PNG"),
])
def test_bad_mask_uploads(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(StudioError, match=message):
        save_mask(tmp_path, data, 16)
    assert not (tmp_path / "masks").exists() or not any((tmp_path / "masks").iterdir())


# --- where the direction fires ------------------------------------------------------------
def test_a_toy_rule_scores_on_the_scenes_it_acts_on(toy: Studio) -> None:
    toy.set_copy(256, [8, 29, 18, 42])
    toy.set_paste(33, [11, 30, 21, 43])
    assert len(toy.request().heldout) == HELDOUT_COUNT and toy.draft.heldout == []
    toy.set_rule("add_tree")
    held = toy.request().heldout
    assert held == toy.load_preset("toy_add_tree").heldout and toy.draft.rule == "add_tree"
    assert {r.seed for r in held} != set(range(HELDOUT_START, HELDOUT_START + HELDOUT_COUNT))  # tree scenes left out
    toy.set_rule(None)
    assert toy.draft.heldout == [] and toy.draft.rule is None


def test_heatmap_and_top_matches(toy: Studio) -> None:
    toy.load_preset("toy_add_tree")
    toy.clear_context()
    paste = toy.draft.paste
    heat = toy.heatmap([paste.seed, 0, 1, 2])
    assert heat.shape == (4, 16, 16) and 0 <= float(heat.min()) and float(heat.max()) <= 1
    x0, y0, x1, y1 = (v // 4 for v in paste.box)  # the target fires on its own paste region (mean 1 before clipping)
    assert float(heat[0, y0:y1, x0:x1].max()) == 1.0
    assert float(heat[1:].mean()) < float(heat[0, y0:y1, x0:x1].mean())  # and elsewhere less
    seeds = toy.page(0)
    best = toy.heatmap(seeds).flatten(1).max(1).values
    added = toy.add_top_matches(seeds, count=3)
    assert [r.seed for r in added] == [seeds[i] for i in best.argsort(descending=True)[:3].tolist()]
    w, h = paste.box[2] - paste.box[0], paste.box[3] - paste.box[1]
    assert all(r.box[2] - r.box[0] == w and r.box[3] - r.box[1] == h for r in added)
    assert toy.draft.context == added
    assert not torch.equal(toy.heatmap(seeds), toy.heatmap(seeds, "low_rank"))  # rank 4, zca: other directions


# --- runs, files, reproduction, history -------------------------------------------------
def test_run_writes_the_cli_files_and_reproduces_through_the_cli(tiny: Studio, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    drawn(tiny).add_context(3, [4, 4, 10, 8])
    steps: list[float] = []
    o = tiny.runs.run("rank_one", progress=lambda f, _m: steps.append(f))
    assert steps[-1] == 1.0 and steps == sorted(steps)
    for name in ("edit.safetensors", "request.yaml", "metrics.json", "grid.png"):
        assert (o.folder / name).is_file(), name
    m = o.metrics
    assert 0 <= m["efficacy_ci_low"] <= m["efficacy"] <= m["efficacy_ci_high"] <= 1
    assert m["score_source"] == "paste_goal" and m["n_heldout"] == HELDOUT_COUNT
    art = EditArtifact.load(o.edit_file)
    assert art.kind == "low_rank" and art.request == tiny.request().to_dict() | {"name": "studio_edit"}
    assert rewrite_edit(["show", str(o.edit_file)]) == 0
    assert json.loads(capsys.readouterr().out)["strategy"]["name"] == "rank_one"

    first = o.request_file.read_text().splitlines()[0]
    assert first.startswith("# reproduce: python -m rewrite ") and first.endswith(f"edit.file={o.request_file}")
    assert EditRequest.load(o.request_file) == tiny.request()
    words = shlex.split(first.removeprefix("# reproduce: "))[3:]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "rewrite", *words, f"hydra.run.dir={tmp_path}/cli"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    studio = json.loads((o.folder / "metrics.json").read_text())
    assert studio["hydra_overrides"] == cli["hydra_overrides"]
    same = {k: v for k, v in studio.items() if k not in TIMES}
    assert same == {k: cli[k] for k in same}, "the CLI scores the exported request differently"
    assert {"ceiling_efficacy", "ceiling_generality", "n_ceiling_heldout"} <= set(cli) - set(studio)
    ceiling = tiny.runs.ceiling()  # the page shows it after the run
    assert ceiling == {k: cli[k] for k in ceiling}


def test_bad_strategy_settings(tiny: Studio) -> None:
    drawn(tiny)
    with pytest.raises(ValueError, match="strategy.rank"):
        tiny.runs.run("rank_one", {"rank": 0})
    with pytest.raises(StudioError, match="no strategy 'nope'"):
        tiny.runs.run("nope")
    assert tiny.runs.run("closed_form").metrics["efficacy"] >= 0  # the session goes on


def test_history_keep_and_undo_bit_for_bit(tiny: Studio) -> None:
    m = tiny.require_model()
    base = m.adapter.state_copy()
    before = tiny.images([2])[0]
    o = drawn(tiny).runs.run("rank_one")
    assert all(torch.equal(v, base[k]) for k, v in m.adapter.model.state_dict().items())  # a run changes nothing
    edits = tiny.history.keep(o.run_id)
    assert edits == [o.edit_file]
    name = EditArtifact.load(o.edit_file).layer
    assert not torch.equal(m.adapter.model.state_dict()[name], base[name])
    assert not torch.equal(tiny.images([2])[0], before)  # the gallery shows the edited model
    assert tiny.require_model().stats.spec.weights_sha256 != o.metrics.get("base_sha256")
    with pytest.raises(StudioError, match="was made on weights"):
        tiny.history.keep(o.run_id)  # made on the unedited weights: refused on the edited ones
    stack = json.loads((tiny.history.stack_file).read_text())
    assert len(stack["edits"]) == 1
    assert tiny.history.undo() == []
    assert all(torch.equal(v, base[k]) for k, v in m.adapter.model.state_dict().items())
    with pytest.raises(StudioError, match="no kept edit to undo"):
        tiny.history.undo()


# --- paths --------------------------------------------------------------------------------
def test_paths_cannot_leave_the_studio_folder(tmp_path: Path) -> None:
    root = tmp_path / "studio"
    (root / "runs").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("x")
    (root / "runs" / "link").symlink_to(tmp_path / "secret.txt")
    assert inside(root, "runs") == (root / "runs").resolve()
    for bad in ("../secret.txt", "runs/../../secret.txt", "/etc/passwd", "runs/link"):
        with pytest.raises(StudioError, match="outside the studio folder|absolute path"):
            inside(root, bad)
    with pytest.raises(StudioError, match="must lie inside"):
        check_mask_path(root, tmp_path / "secret.txt")


def test_an_imported_request_cannot_name_files_outside(tiny: Studio, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(png_bytes(np.full((16, 16), 255, np.uint8)))
    text = ("copy: {seed: 1, box: [4, 4, 10, 8]}\npaste: {seed: 2, box: [6, 8, 12, 12]}\n"
            "context: [{seed: 3, mask: %s}]\n")
    for mask in (str(outside), "../elsewhere.png", "masks/../../elsewhere.png"):
        with pytest.raises(StudioError, match="must lie inside the studio folder"):
            tiny.import_request(text % mask)
    kept = tiny.add_context(4, mask=png_bytes(np.full((16, 16), 255, np.uint8)))
    rel = Path(kept.mask_path).relative_to(tiny.out)
    request = tiny.import_request(text % rel)
    assert Path(request.context[0].mask_path).resolve() == Path(kept.mask_path)
    with pytest.raises(StudioError, match="not valid YAML"):
        tiny.import_request("copy: [")
    with pytest.raises(ValueError, match="paste region is"):
        tiny.import_request(yaml.safe_dump({"copy": {"seed": 1, "box": [4, 4, 10, 8]},
                                            "paste": {"seed": 2, "box": [0, 0, 3, 3]}}))
