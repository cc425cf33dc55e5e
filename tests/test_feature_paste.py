"""Feature copy/paste as a training signal for the toy generator (rewrite/toyworld/models/feature_paste.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from rewrite.toyworld.models.feature_paste import Paste, apply_pastes, draw_pastes, pasted_at
from rewrite.toyworld.models.generator import build_toy_generator
from rewrite.toyworld.models.training import layer_scale, paste_targets
from tests.test_train_scripts import _train


def test_apply_pastes_copies_boxes_from_the_unpasted_batch() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    out = apply_pastes(x, [Paste(dst=0, src=1, ay=0, ax=0, by=2, bx=1, h=2, w=3),
                           Paste(dst=1, src=0, ay=2, ax=1, by=0, bx=0, h=2, w=3)])
    assert torch.equal(out[0, 0, 2:4, 1:4], x[1, 0, 0:2, 0:3])
    assert torch.equal(out[1, 0, 0:2, 0:3], x[0, 0, 2:4, 1:4])  # read from x, not from the first paste's result
    keep = torch.ones_like(x, dtype=torch.bool)
    keep[0, 0, 2:4, 1:4] = keep[1, 0, 0:2, 0:3] = False
    assert torch.equal(out[keep], x[keep]) and not torch.equal(out, x)


def test_draw_pastes_stay_inside_the_layer_and_take_from_another_sample() -> None:
    g = torch.Generator().manual_seed(0)
    pastes = draw_pastes(5, 3, 16, 2, 8, generator=g)
    assert [p.dst for p in pastes] == [0, 1, 2] and [p.src for p in pastes] == [1, 2, 3]
    for p in pastes:
        assert 2 <= p.h <= 8 and 2 <= p.w <= 8
        assert 0 <= p.ay <= 16 - p.h and 0 <= p.by <= 16 - p.h and 0 <= p.ax <= 16 - p.w and 0 <= p.bx <= 16 - p.w
    with pytest.raises(ValueError, match="min_cells <= max_cells"):
        draw_pastes(4, 1, 16, 9, 8, generator=g)
    with pytest.raises(ValueError, match="batch of at least 2"):
        draw_pastes(1, 1, 16, 2, 8, generator=g)


def test_pasted_at_changes_the_layer_output_as_apply_pastes_does() -> None:
    layer = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    pastes = [Paste(0, 1, 1, 1, 4, 3, 3, 2)]
    with torch.no_grad(), pasted_at(layer, pastes):
        got = layer(x)
    with torch.no_grad():
        assert torch.equal(got, apply_pastes(layer(x), pastes))  # and the hook is gone afterwards
        assert not torch.equal(layer(x), got)


def test_the_target_is_the_pixel_paste_at_the_layers_scale() -> None:
    g = build_toy_generator({"channels": {4: 8, 8: 8, 16: 8, 32: 8, 64: 8}, "w_dim": 8, "mapping_hidden": 0})
    layer, scale = layer_scale(g, "convs.4")
    assert layer is g.convs[4] and scale == 2  # convs.4 draws 32 px of a 64 px image
    assert layer_scale(g, "convs.3")[1] == 4
    with pytest.raises(ValueError, match="not a synthesis layer"):
        layer_scale(g, "to_rgbs.1")
    x, labels = torch.rand(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    target, target_labels = paste_targets(x, labels, [Paste(0, 1, 2, 3, 10, 11, 4, 5)], scale)
    assert torch.equal(target[0, :, 20:28, 22:32], x[1, :, 4:12, 6:16])
    assert torch.equal(target_labels[0, 20:28, 22:32], labels[1, 4:12, 6:16])
    assert torch.equal(target[1], x[1])


def test_generator_training_with_feature_pastes_reports_their_error(tmp_path: Path) -> None:
    out = tmp_path / "toy.pt"
    proc = _train(tmp_path, out, "trainer.max_steps=2", "eval.every=1", "loss.perceptual=0", "paste.fraction=0.5",
                  "paste.weight=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads(out.with_suffix(".json").read_text())
    assert {"paste_mae_convs.4", "paste_mae_convs.5"} <= set(card["val_last"])
    assert card["segments"][-1]["loss"] is not None and card["config"]["paste"]["weight"] == 4
    proc = _train(tmp_path, tmp_path / "bad.pt", "trainer.max_steps=1", "paste.fraction=0.5",
                  "paste.layers=[convs.9]")
    assert proc.returncode != 0 and "not a synthesis layer" in proc.stderr
