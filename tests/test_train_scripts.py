"""The scripts that made the committed toy assets still run: tiny real runs, cards checked."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rewrite.toyworld import CLASSES, RULES
from rewrite.toyworld.models.generator import load_toy_stylegan2
from rewrite.toyworld.models.segmenter import load_toy_segmenter
from rewrite.toyworld.models.training import class_weights, train_state_path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def test_class_weights_average_one_and_favour_rare_classes() -> None:
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    freq = torch.tensor([0.9, 0.09, 0.01] + [0.0] * (len(CLASSES) - 3))
    for exponent in (0.0, 0.5, 1.0):
        w = class_weights(labels, exponent)
        assert abs(float((freq * w).sum()) - 1) < 1e-5  # an average pixel weighs 1
        if exponent:
            assert w[2] > w[1] > w[0]
        else:
            assert torch.allclose(w[:3], torch.ones(3))


def test_class_boost_multiplies_one_class_and_keeps_the_average() -> None:
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    freq = torch.tensor([0.9, 0.09, 0.01] + [0.0] * (len(CLASSES) - 3))
    plain, boosted = class_weights(labels, 0.5), class_weights(labels, 0.5, {CLASSES[2]: 8.0})
    assert abs(float((freq * boosted).sum()) - 1) < 1e-5
    assert abs(float(boosted[2] / boosted[1]) - 8 * float(plain[2] / plain[1])) < 1e-4
    assert abs(float(boosted[0] / boosted[1]) - float(plain[0] / plain[1])) < 1e-6
    with pytest.raises(ValueError, match="unknown classes"):
        class_weights(labels, 0.5, {"castle": 2.0})


def test_lr_schedule_takes_the_last_step_reached() -> None:
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from rewrite.toyworld.models.training import ToyGeneratorModule

    module = SimpleNamespace(cfg=OmegaConf.create({"lr": 2e-3, "lr_schedule": {6000: 5e-4, 9000: 1e-4}}))
    got = [ToyGeneratorModule.lr_at(module, s) for s in (0, 5999, 6000, 8999, 9000, 20000)]
    assert got == [2e-3, 2e-3, 5e-4, 5e-4, 1e-4, 1e-4]
    assert ToyGeneratorModule.lr_at(SimpleNamespace(cfg=OmegaConf.create({"lr": 1e-3})), 50) == 1e-3


def _train(tmp_path: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rewrite.toyworld.models.training", "batch_size=2", "eval.samples=4",
         "loss.perceptual_images=2", "architecture.channels={4:16,8:16,16:16,32:24,64:12}", "architecture.w_dim=16",
         f"out={out}", f"log_dir={tmp_path / 'logs'}", "torch_threads=1", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", f"hydra.run.dir={tmp_path / 'hydra'}", *overrides],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)


def test_generator_training_tiny_run_then_resume(tmp_path: Path) -> None:
    """A fresh tiny run writes generator, card and state; resuming continues the step count and the
    weights from the saved state, and the thin script in experiments/ runs the same code."""
    out = tmp_path / "toy.pt"
    proc = _train(tmp_path, out, "trainer.max_steps=3", "eval.every=2", "save_every=2",
                  "loss.class_boost={watermark:2.0}", "architecture.mapping_hidden=8", "loss.adversarial=0.1",
                  "discriminator.channels=[8,8]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["steps"] == 3 and card["device"].startswith("cpu")
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert card["architecture"] == {"w_dim": 16, "mapping_hidden": 8, "scene_styles": 4, "rgb_from": 32,
                                    "channels": {"4": 16, "8": 16, "16": 16, "32": 24, "64": 12}}
    assert set(card["val_last"]) == {"mae01", "segmenter_miou", "tower_tops_read_correctly",
                                     *(f"recall_{rule}" for rule in RULES)}
    first = load_toy_stylegan2(str(out))  # the shape comes from the checkpoint itself
    assert first.model.convs[6].conv.weight.shape[1] == 12
    assert torch.isfinite(first.generate(first.sample_z([0]))).all()
    state = torch.load(train_state_path(out), map_location="cpu", weights_only=True)
    assert state["step"] == 3 and set(state) == {"g", "g_ema", "opt", "step", "seconds", "segments", "out_sha256",
                                                 "disc"}
    disc_before = state["disc"]["weights"]

    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "train_toy_generator.py"), "batch_size=2", "eval.samples=4",
         "loss.perceptual=0", "architecture.channels={4:16,8:16,16:16,32:24,64:12}", "architecture.w_dim=16",
         "architecture.mapping_hidden=8", "resume=true", "trainer.max_steps=2", "eval.every=100", "save_every=0",
         "lr=1e-3", "loss.adversarial=0.1", "discriminator.channels=[8,8]",
         f"out={out}", f"log_dir={tmp_path / 'logs'}", "torch_threads=1", "trainer.enable_progress_bar=false",
         f"hydra.run.dir={tmp_path / 'hydra2'}"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["steps"] == 5
    assert [(g["start_step"], g["end_step"]) for g in card["segments"]] == [(0, 3), (3, 5)]
    assert card["segments"][1]["data_seed"] != card["segments"][0]["data_seed"]  # fresh batches after resuming
    resumed = load_toy_stylegan2(str(out))
    assert resumed.fingerprint() != first.fingerprint()  # two more Adam steps moved the weights
    state = torch.load(train_state_path(out), map_location="cpu", weights_only=True)
    assert state["opt"]["param_groups"][0]["lr"] == 1e-3 == card["segments"][1]["lr"]  # the new lr was used
    assert int(state["disc"]["opt"]["state"][0]["step"]) == 5  # the discriminator went on from its saved Adam state
    assert any(not torch.equal(disc_before[k], v) for k, v in state["disc"]["weights"].items())

    train_state_path(out).unlink()  # a fresh clone has the generator and its card, not the training state
    proc = _train(tmp_path, out, "resume=true", "trainer.max_steps=1", "eval.every=100", "save_every=0",
                  "loss.perceptual=0", "architecture.mapping_hidden=8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["steps"] == 6 and "optimizer state restarted" in card["segments"][-2]["note"]


def test_generator_training_refuses_to_resume_nothing_or_a_replaced_generator(tmp_path: Path) -> None:
    proc = _train(tmp_path, tmp_path / "none.pt", "resume=true", "trainer.max_steps=1")
    assert proc.returncode != 0 and "nothing to resume" in proc.stderr
    out = tmp_path / "g.pt"
    assert _train(tmp_path, out, "trainer.max_steps=1", "loss.perceptual=0").returncode == 0
    out.write_bytes(out.read_bytes() + b"\0")  # another generator now sits where the state's one was
    proc = _train(tmp_path, out, "resume=true", "trainer.max_steps=1", "loss.perceptual=0")
    assert proc.returncode != 0 and "belongs to another generator" in proc.stderr


def test_generator_training_refuses_an_unknown_architecture_key(tmp_path: Path) -> None:
    proc = _train(tmp_path, tmp_path / "x.pt", "trainer.max_steps=1", "+architecture.n_mlp=8")
    assert proc.returncode != 0 and "unknown toy architecture keys ['n_mlp']" in proc.stderr


def test_segmenter_training_script_tiny_run(tmp_path: Path) -> None:
    out = tmp_path / "seg.pt"
    proc = subprocess.run([sys.executable, "experiments/train_toy_segmenter.py", "--steps", "3", "--batch", "4",
                           "--out", str(out)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert 0 <= card["heldout_pixel_accuracy"] <= 1 and set(card["heldout_iou"]) == set(CLASSES)
    assert load_toy_segmenter(str(out)).labels(torch.rand(1, 3, 64, 64)).shape == (1, 64, 64)
