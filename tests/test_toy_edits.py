"""Toy-world edit requests (automatic regions) and ground-truth scoring (checked with an oracle model)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from rewrite.core.request import EditRequest
from rewrite.generators.base import GeneratorAdapter, seed_latents
from rewrite.pipeline import CONF_DIR
from rewrite.toyworld import CLASS_ID, RULES, Z_DIM, ideal_edit, params_from_z, render
from rewrite.toyworld.requests.edits import MAX_GOAL_MISS, snap, toy_heldout, toy_request
from rewrite.toyworld.requests.score import ToyRuleScore

# Pixels each rule's paste / copy region must contain, in the paste / copy scene's true labels.
PASTE_HAS = {"dome_to_spire": "dome", "remove_watermark": "watermark", "add_tree": None, "no_reflections": "reflection"}
COPY_HAS = {"dome_to_spire": "spire", "remove_watermark": None, "add_tree": "tree", "no_reflections": "water"}


pytestmark = pytest.mark.usefixtures("one_thread")


def configured(rule: str, **overrides: int) -> EditRequest:
    """The request `edit=toy_<rule>` makes (its config's arguments), with `overrides`."""
    cfg = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "edit" / f"toy_{rule}.yaml"))
    return toy_request(**{**{k: v for k, v in cfg.items() if k not in ("_target_", "defaults")}, **overrides})


def labels_of(seed: int) -> Tensor:
    return render(params_from_z(seed_latents([seed], (Z_DIM,))))[1][0]


@pytest.mark.parametrize("rule", RULES)
def test_requests_are_automatic_reproducible_and_on_target(rule: str) -> None:
    req = configured(rule)
    assert req == configured(rule)
    req.validate(64)
    assert all(r.seed >= 1_000_000 for r in req.heldout) and len({r.seed for r in req.heldout}) == 32
    used = {req.copy.seed, req.paste.seed}
    assert not used & {r.seed for r in req.context} and len(req.context) == 96
    assert req.context_regions[0] == req.paste  # the directions see the keys they must change
    # Paste, context and held-out regions are the same kind of region (same-size boxes where sizes match).
    if rule == "dome_to_spire":
        assert {r.box[3] - r.box[1] for r in (req.paste, *req.context)} <= {r.box[3] - r.box[1] for r in req.context}
    for region, want in ((req.paste, PASTE_HAS[rule]), (req.copy, COPY_HAS[rule])):
        if want is not None:
            x0, y0, x1, y1 = region.box
            assert (labels_of(region.seed)[y0:y1, x0:x1] == CLASS_ID[want]).any(), (rule, want)
    # The copy is the example a careful user picks: its pixels are (nearly) the paste scene's ideal edit.
    x0, y0, x1, y1 = req.paste.box
    cx0, cy0, cx1, cy1 = req.copy.box
    paste_p = params_from_z(seed_latents([req.paste.seed], (Z_DIM,)))
    ideal, before = render(ideal_edit(paste_p, rule))[0][0], render(paste_p)[0][0]
    copied = render(params_from_z(seed_latents([req.copy.seed], (Z_DIM,))))[0][0, :, cy0:cy1, cx0:cx1]
    miss = (copied - ideal[:, y0:y1, x0:x1]).abs().mean()
    assert miss <= MAX_GOAL_MISS * (ideal - before)[:, y0:y1, x0:x1].abs().mean(), rule
    if rule == "add_tree":  # the paste place is empty: no tree there yet
        x0, y0, x1, y1 = req.paste.box
        assert not (labels_of(req.paste.seed)[y0:y1, x0:x1] == CLASS_ID["tree"]).any()


@pytest.mark.parametrize("rule", RULES)
def test_requests_lie_on_the_feature_grid(rule: str) -> None:
    """Every box starts and ends on the 2 px grid of the 32 px layers, so the copied features land exactly where
    the copied pixels would (a 1 px offset lands them half a cell off: a thin spire then misses its place)."""
    req = configured(rule)
    for r in (req.copy, req.paste, *req.context, *req.heldout):
        assert all(v % 2 == 0 for v in r.box), (rule, r)
    if rule == "no_reflections":  # the 16 px layers' 4 px cells
        coarse = configured(rule, align=4)
        assert all(v % 4 == 0 for r in (coarse.copy, coarse.paste, *coarse.heldout) for v in r.box)


def test_snap_grows_a_box_to_whole_cells() -> None:
    assert snap((3, 5, 9, 10), 2) == (2, 4, 10, 10)
    assert snap((3, 5, 9, 10), 4) == (0, 4, 12, 12)
    assert snap((3, 5, 9, 10), 2, halo=2) == (0, 2, 12, 12)
    assert snap((1, 60, 7, 63), 2, halo=2) == (0, 58, 10, 64)  # clipped to the 64 px canvas
    assert snap((4, 6, 8, 10), 2) == (4, 6, 8, 10)  # already whole cells


class OracleWorld(nn.Module):
    """A 'generator' that is the renderer itself, optionally with the rule applied."""

    def __init__(self, rule: str | None = None) -> None:
        super().__init__()
        self.rule = rule
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, z: Tensor) -> Tensor:
        p = params_from_z(z)
        return render(ideal_edit(p, self.rule) if self.rule else p)[0] * 2 - 1


def test_segmenter_figures_tell_whether_the_generator_draws_the_source() -> None:
    from rewrite.toyworld.models.segmenter import load_toy_segmenter

    rule = "remove_watermark"
    req = toy_request(rule, heldout=4)
    model = OracleWorld()
    adapter = GeneratorAdapter(model, (Z_DIM,), "oracle")
    seeds = list(dict.fromkeys(r.seed for r in req.heldout))
    score = ToyRuleScore(adapter, rule, seeds, [], load_toy_segmenter())
    model.rule = rule
    ideal = score.metrics()
    assert ideal["toy_source_recall_before"] > 0.9  # the oracle draws every watermark
    assert ideal["toy_segmenter_changed_fraction"] > 0.9  # and the ideal edit removes them
    assert ideal["generality"] > 0.95
    # A world that never draws watermarks: removing them "works" on nothing, and the recall says so.
    blind = ToyRuleScore(adapter, rule, seeds, [], load_toy_segmenter())
    assert blind.metrics()["toy_source_recall_before"] < 0.1


def test_the_heldout_regions_alone_are_the_requests() -> None:
    """A rule's held-out regions come without the request's search for a copy/paste pair (and are cached)."""
    req = configured("remove_watermark", heldout_offset=5_000_000)
    assert toy_heldout("remove_watermark", 32, 6_000_000, 2, 2) == req.heldout
