"""Procedural toy world: a 64x64 "generator" whose scenes, part labels and ideal rule edits are all known.

Typical use:

    z = sample_z(1000, seed=0)
    params = params_from_z(z)
    images, labels = render(params)  # (N, 3, 64, 64) in [0, 1]; (N, 64, 64) CLASSES ids
    target, _ = render(ideal_edit(params, "dome_to_spire"))  # the ideal rewritten outputs

Rooms: `world/` (`params`: z -> SceneParams, `render`, `rules`: ideal edits, `labels`: classes and boxes,
`code`), `models/` (the toy StyleGAN2 `generator`, the `segmenter`, their training and checks) and `requests/`
(edit requests from the rules, `score`: the scorer against the ideal edits). The names below are the world's.
The toy world builds on `rewrite.core`, `rewrite.generators` and `rewrite.eval`; nothing there imports it.
"""

from rewrite.toyworld.world.labels import CLASS_ID, CLASSES, colourise, tower_top_boxes, tree_boxes, watermark_box
from rewrite.toyworld.world.params import (
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
from rewrite.toyworld.world.render import render
from rewrite.toyworld.world.rules import RULE_CLASSES, RULES, ideal_edit

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
