"""The scripts that made the committed toy assets still run: tiny real runs, cards checked."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rewrite.generators.toy_stylegan2 import build_toy_stylegan2, load_toy_stylegan2, toy_checkpoint_path
from rewrite.toyworld import CLASSES, Z_DIM
from rewrite.toyworld.segmenter import load_toy_segmenter

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def _script(name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_class_weights_average_one_and_favour_rare_classes() -> None:
    class_weights = _script("train_toy_generator").class_weights
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
    class_weights = _script("train_toy_generator").class_weights
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    freq = torch.tensor([0.9, 0.09, 0.01] + [0.0] * (len(CLASSES) - 3))
    plain, boosted = class_weights(labels, 0.5), class_weights(labels, 0.5, {CLASSES[2]: 8.0})
    assert abs(float((freq * boosted).sum()) - 1) < 1e-5
    assert abs(float(boosted[2] / boosted[1]) - 8 * float(plain[2] / plain[1])) < 1e-4
    assert abs(float(boosted[0] / boosted[1]) - float(plain[0] / plain[1])) < 1e-6
    with pytest.raises(ValueError, match="unknown classes"):
        class_weights(labels, 0.5, {"castle": 2.0})


def test_train_pool_draws_only_the_first_validation_z() -> None:
    script = _script("train_toy_generator")
    z_val = torch.randn(16, Z_DIM, generator=torch.Generator().manual_seed(1))
    pool = script.training_pool(z_val, 5)
    batches = iter(script.LatentBatches(64, seed=3, pool=pool))
    drawn = torch.cat([next(batches) for _ in range(4)])
    assert (drawn[:, None] == z_val[None, :5]).all(-1).any(1).all()  # every row is one of the pool
    assert len(torch.unique(drawn, dim=0)) == 5  # and 256 draws reach all five
    again = iter(script.LatentBatches(64, seed=3, pool=pool))
    assert torch.equal(next(again), drawn[:64])  # seeded
    assert script.training_pool(z_val, None) is None
    fresh = next(iter(script.LatentBatches(64, seed=3)))
    assert fresh.shape == (64, Z_DIM) and not (fresh[:, None] == z_val[None]).all(-1).any()
    for bad in (0, 17):
        with pytest.raises(ValueError, match="train_pool"):
            script.training_pool(z_val, bad)


def test_generator_training_script_tiny_run(tmp_path: Path) -> None:
    out = tmp_path / "toy.pt"
    proc = subprocess.run(
        [sys.executable, "experiments/train_toy_generator.py", "trainer.max_steps=3", "batch_size=4",
         "eval.samples=8", "eval.every=2", "save_every=2", "loss.class_balance=0.5", "loss.perceptual_images=2",
         "loss.class_boost={watermark:2.0}",
         f"init_from={toy_checkpoint_path()}", f"out={out}", f"log_dir={tmp_path / 'logs'}", "torch_threads=1",
         "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads(out.with_suffix(".json").read_text())
    committed = json.loads(toy_checkpoint_path().with_suffix(".json").read_text())
    assert card["steps"] == 3 and card["device"].startswith("cpu")
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert card["previous"]["sha256"] == committed["sha256"]  # the chain names what it continued from
    assert set(card["val_last"]) == {"mae01", "segmenter_miou", "tower_tops_read_correctly"}
    trained, start = load_toy_stylegan2(str(out)), load_toy_stylegan2()
    assert trained.fingerprint() != start.fingerprint()  # three Adam steps moved the weights
    assert torch.isfinite(trained.generate(trained.sample_z([0]))).all()


def test_generator_training_script_fresh_variant_shape(tmp_path: Path) -> None:
    out = tmp_path / "wide.pt"
    proc = subprocess.run(
        [sys.executable, "experiments/train_toy_generator.py", "trainer.max_steps=2", "batch_size=2",
         "eval.samples=4", "eval.every=100", "loss.perceptual=0", "loss.latent_recon=1.0", "architecture.n_mlp=2",
         "architecture.channels={4:16,8:16,16:16,32:24,64:12}", f"out={out}", f"log_dir={tmp_path / 'logs'}",
         "torch_threads=1", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["previous"] is None and card["steps"] == 2
    assert card["architecture"]["n_mlp"] == 2
    assert card["architecture"]["channels"] == {"4": 16, "8": 16, "16": 16, "32": 24, "64": 12}
    loaded = load_toy_stylegan2(str(out))  # the shape comes from the checkpoint itself
    assert loaded.model.convs[6].conv.weight.shape[1] == 12


def test_latent_recon_starts_from_the_least_squares_read_out() -> None:
    script = _script("train_toy_generator")
    torch.manual_seed(0)
    g = build_toy_stylegan2(n_mlp=2, channels={4: 8, 8: 8, 16: 8, 32: 8, 64: 8})
    fitted = script.fitted_decoder(g, seed=0, n=4096)
    z = torch.randn(2048, Z_DIM, generator=torch.Generator().manual_seed(99))  # other z than the fit's
    with torch.no_grad():
        loss = float(script.latent_recon_loss(g, fitted, z))
        shuffled = torch.nn.Linear(Z_DIM, Z_DIM)
        shuffled.weight.copy_(fitted.weight[torch.randperm(Z_DIM)])  # same scale, wrong rows
        shuffled.bias.copy_(fitted.bias)
        assert loss < 0.8 < float(script.latent_recon_loss(g, shuffled, z))
        # moving the fitted read-out in any direction makes it worse (a least-squares optimum)
        for _ in range(3):
            nudged = torch.nn.Linear(Z_DIM, Z_DIM)
            nudged.weight.copy_(fitted.weight + 0.05 * torch.randn(Z_DIM, Z_DIM))
            nudged.bias.copy_(fitted.bias)
            assert float(script.latent_recon_loss(g, nudged, z)) > loss


def test_continuing_a_checkpoint_refuses_a_new_shape() -> None:
    cfg = OmegaConf.create({"lr_mlp": 1.0, "init_from": str(toy_checkpoint_path()),
                            "architecture": {"n_mlp": 8, "channels": None}})
    with pytest.raises(ValueError, match="leave architecture"):
        _script("train_toy_generator").build_generator(cfg)


def test_segmenter_training_script_tiny_run(tmp_path: Path) -> None:
    out = tmp_path / "seg.pt"
    proc = subprocess.run([sys.executable, "experiments/train_toy_segmenter.py", "--steps", "3", "--batch", "4",
                           "--out", str(out)], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert 0 <= card["heldout_pixel_accuracy"] <= 1 and set(card["heldout_iou"]) == set(CLASSES)
    assert load_toy_segmenter(str(out)).labels(torch.rand(1, 3, 64, 64)).shape == (1, 64, 64)
