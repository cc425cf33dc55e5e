"""Procedural toy world: a 64x64 "generator" whose scenes, part labels and ideal rule edits are all known.

Typical use:

    z = sample_z(1000, seed=0)
    params = params_from_z(z)
    images, labels = render(params)  # (N, 3, 64, 64) in [0, 1]; (N, 64, 64) CLASSES ids
    target, _ = render(ideal_edit(params, "dome_to_spire"))  # the ideal rewritten outputs

Modules: `params` (z -> SceneParams), `render`, `rules` (ideal edits), `labels` (classes, boxes).
"""

from rewrite.toyworld.labels import CLASS_ID, CLASSES, colourise, tower_top_boxes, tree_boxes, watermark_box
from rewrite.toyworld.params import (
    TOP_DOME,
    TOP_FLAT,
    TOP_KINDS,
    TOP_SPIRE,
    Z_DIM,
    Z_FIELDS,
    SceneParams,
    params_from_z,
    sample_z,
)
from rewrite.toyworld.render import render
from rewrite.toyworld.rules import RULE_CLASSES, RULES, ideal_edit

__all__ = [
    "CLASSES",
    "CLASS_ID",
    "RULES",
    "RULE_CLASSES",
    "TOP_DOME",
    "TOP_FLAT",
    "TOP_KINDS",
    "TOP_SPIRE",
    "Z_DIM",
    "Z_FIELDS",
    "SceneParams",
    "colourise",
    "ideal_edit",
    "params_from_z",
    "render",
    "sample_z",
    "tower_top_boxes",
    "tree_boxes",
    "watermark_box",
]
