"""Toy world: determinism, labels that match the pixels, and ideal edits that touch only their parts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rewrite.toyworld import (
    CLASS_ID,
    CLASSES,
    RULE_CLASSES,
    RULES,
    TOP_DOME,
    TOP_KINDS,
    Z_DIM,
    ideal_edit,
    params_from_z,
    render,
    sample_z,
    tower_top_boxes,
    tree_boxes,
    watermark_box,
)
from rewrite.toyworld.world.params import SceneParams

TOP_CLASSES = ("dome", "spire", "flat_top")  # indexed by top kind


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scenes() -> tuple[SceneParams, torch.Tensor, torch.Tensor]:
    params = params_from_z(sample_z(384, seed=1))
    return (params, *render(params))


def _in_box(box: torch.Tensor) -> torch.Tensor:
    """(..., 64, 64) bool mask of the (..., 4) boxes (x0, y0, x1, y1)."""
    c = torch.arange(64)
    inside_y = (c >= box[..., 1, None]) & (c < box[..., 3, None])
    inside_x = (c >= box[..., 0, None]) & (c < box[..., 2, None])
    return inside_y[..., :, None] & inside_x[..., None, :]


def _grow(mask: torch.Tensor) -> torch.Tensor:
    """Dilate (N, 64, 64) masks by one pixel in all eight directions (the anti-aliasing reach)."""
    return F.max_pool2d(mask[:, None].float(), 3, stride=1, padding=1)[:, 0].bool()


def _is(labels: torch.Tensor, *names: str) -> torch.Tensor:
    return torch.isin(labels, torch.tensor([CLASS_ID[n] for n in names]))


def test_shapes_range_and_classes(scenes) -> None:
    params, image, labels = scenes
    assert image.shape == (params.n, 3, 64, 64) and image.dtype == torch.float32
    assert labels.shape == (params.n, 64, 64) and labels.dtype == torch.long
    assert image.min() >= 0 and image.max() <= 1
    assert labels.min() >= 0 and labels.max() < len(CLASSES)
    assert len(set(CLASSES)) == len(CLASSES) == 13
    assert all(CLASSES[i] == name for name, i in CLASS_ID.items())
    assert set(torch.unique(labels).tolist()) == set(range(len(CLASSES)))


def test_deterministic_and_chunk_independent() -> None:
    z = sample_z(40, seed=7)
    assert torch.equal(z, sample_z(40, seed=7)) and z.shape == (40, Z_DIM)
    image, labels = render(params_from_z(z))
    image2, labels2 = render(params_from_z(z.clone()), chunk=7)
    assert torch.equal(image, image2) and torch.equal(labels, labels2)
    with pytest.raises(ValueError):
        params_from_z(torch.zeros(3, Z_DIM + 1))


def test_frequencies() -> None:
    params = params_from_z(sample_z(2000, seed=3))
    assert 0.18 <= params.watermark_present.float().mean() <= 0.32
    assert 0.4 <= params.pond_present.float().mean() <= 0.6
    assert 0.4 <= (params.tower_count == 2).float().mean() <= 0.6
    kinds = torch.bincount(params.top_kind[params.tower_present], minlength=3).float()
    assert (kinds / kinds.sum() > 0.28).all(), dict(zip(TOP_KINDS, kinds.tolist(), strict=True))
    trees = params.tree_present.any(1).float().mean()
    assert 0.3 < trees < 0.8
    assert params.reflect.all()


def test_class_colours_differ(scenes) -> None:
    _, image, labels = scenes
    means = [image.permute(0, 2, 3, 1)[labels == c].mean(0) for c in range(len(CLASSES))]
    gaps = torch.cdist(torch.stack(means), torch.stack(means)) + torch.eye(len(CLASSES))
    assert gaps.min() > 0.05, gaps


def test_tops_stand_out_from_sky(scenes) -> None:
    """In every scene, each tower-top class present is clearly not sky-coloured."""
    _, image, labels = scenes
    rgb = image.permute(0, 2, 3, 1)
    for i in range(labels.shape[0]):
        sky = rgb[i][labels[i] == CLASS_ID["sky"]].mean(0)
        for name in TOP_CLASSES:
            interior = ~_grow(labels[i : i + 1] != CLASS_ID[name])[0]
            if interior.any():
                assert (rgb[i][interior].mean(0) - sky).norm() > 0.15, (i, name)


def test_tower_tops_where_params_say(scenes) -> None:
    params, _, labels = scenes
    in_top = _in_box(tower_top_boxes(params))  # (N, 2, 64, 64)
    for k in range(2):
        present = params.tower_present[:, k]
        for kind, name in enumerate(TOP_CLASSES):
            count = ((labels == CLASS_ID[name]) & in_top[:, k]).sum((1, 2))
            assert (count[present & (params.top_kind[:, k] == kind)] > 0).all(), name
            assert (count[present & (params.top_kind[:, k] != kind)] == 0).all(), name
    outside = ~(in_top & params.tower_present[:, :, None, None]).any(1)
    assert not (_is(labels, *TOP_CLASSES) & outside).any()


def test_watermark_pond_trees_where_params_say(scenes) -> None:
    params, _, labels = scenes
    marked = labels == CLASS_ID["watermark"]
    in_mark = _in_box(watermark_box(params))
    assert torch.equal(marked, in_mark & params.watermark_present[:, None, None])
    wet = _is(labels, "water", "reflection").any(2).any(1)
    assert torch.equal(wet, params.pond_present)
    trees = labels == CLASS_ID["tree"]
    in_trees = (_in_box(tree_boxes(params)) & params.tree_present[:, :, None, None]).any(1)
    assert torch.equal(trees.any(2).any(1), params.tree_present.any(1))
    assert not (trees & ~in_trees).any()


def test_reflections_are_glitter_paths_under_lit_windows(scenes) -> None:
    """Pond pixels show a reflection exactly in the columns of lit windows (unless a tree hides the
    window from the check), dimmer than the window and far from the plain water colour."""
    params, image, labels = scenes
    lit_rgb = torch.tensor((1.00, 0.86, 0.38))
    lit = (labels == CLASS_ID["window"]) & ((image.permute(0, 2, 3, 1) - lit_rgb).abs().amax(-1) < 1e-4)
    lit_col, tree_col = lit.any(1), (labels == CLASS_ID["tree"]).any(1)
    n, y, x = torch.nonzero(labels == CLASS_ID["reflection"], as_tuple=True)
    assert n.numel() > 500
    assert (lit_col | tree_col)[n, x].all() and lit_col[n, x].float().mean() > 0.9
    wn, _, wx = torch.nonzero(labels == CLASS_ID["water"], as_tuple=True)
    assert not lit_col[wn, wx].any()
    reflection = image[n, :, y, x]
    assert (reflection.sum(1) < lit_rgb.sum()).all()
    water = image.permute(0, 2, 3, 1)[labels == CLASS_ID["water"]].mean(0)
    assert (reflection.mean(0) - water).norm() > 0.3


@pytest.mark.parametrize("rule", RULES)
def test_ideal_edit_touches_only_its_parts(scenes, rule: str) -> None:
    params, image, labels = scenes
    edited_params = ideal_edit(params, rule)
    edited, edited_labels = render(edited_params)
    changed = labels != edited_labels
    before, after = RULE_CLASSES[rule]
    assert _is(labels[changed], *before).all() and _is(edited_labels[changed], *after).all()
    pixel_changed = (image != edited).any(1)
    assert not (pixel_changed & ~_grow(changed)).any(), "pixels changed away from any changed label"
    assert not (changed & ~pixel_changed).any(), "a relabelled pixel kept its colour"
    touched = changed.any(2).any(1)
    assert torch.equal(touched, pixel_changed.any(2).any(1))
    assert 0 < touched.sum() < params.n


def test_rule_specific_regions(scenes) -> None:
    params, image, labels = scenes
    has_dome = ((params.top_kind == TOP_DOME) & params.tower_present).any(1)
    _, relabelled = render(ideal_edit(params, "dome_to_spire"))
    assert torch.equal((relabelled != labels).any(2).any(1), has_dome)
    assert not (relabelled == CLASS_ID["dome"]).any()

    unmarked, _ = render(ideal_edit(params, "remove_watermark"))
    outside = ~_in_box(watermark_box(params))[:, None].expand_as(image)
    assert torch.equal(unmarked[outside], image[outside])

    treed, tree_labels = render(ideal_edit(params, "add_tree"))
    new_tree = (tree_labels == CLASS_ID["tree"]) & (labels != CLASS_ID["tree"])
    assert torch.equal(new_tree.any(2).any(1), ~params.tree_present[:, 0])
    assert not (new_tree & ~_in_box(tree_boxes(params)[:, 0])).any()
    assert not ((treed != image).any(1) & ~_grow(new_tree)).any()

    _, dry = render(ideal_edit(params, "no_reflections"))
    assert not (dry == CLASS_ID["reflection"]).any()
    assert torch.equal(dry == CLASS_ID["water"], _is(labels, "water", "reflection"))
    with pytest.raises(ValueError):
        ideal_edit(params, "domes_to_trees")


def test_speed_smoke() -> None:
    image, labels = render(params_from_z(sample_z(1000, seed=11)))
    assert image.shape == (1000, 3, 64, 64) and labels.shape == (1000, 64, 64)
