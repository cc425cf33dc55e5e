"""Ideal rule changes: the scene each rewriting rule should produce, known exactly.

A rule edits scene parameters, never pixels, so `render(ideal_edit(params, rule))` is the
same scene with only the rule's parts changed: the perfect target for a rewritten model.
One rule of each kind in Bau et al. (2020):

=================  ========  ==========================================================
rule               kind      effect
=================  ========  ==========================================================
dome_to_spire      replace   every dome becomes a spire on the same tower
remove_watermark   erase     the watermark disappears, revealing the scene under it
add_tree           add       a tree appears at the left corner of the building (its
                             place and size were drawn from z even while it was absent);
                             scenes that already have one are unchanged
no_reflections     physics   lit windows stop casting glitter paths down the pond;
                             the water itself stays
=================  ========  ==========================================================
"""

from __future__ import annotations

import dataclasses

import torch

from rewrite.toyworld.world.params import TOP_DOME, TOP_SPIRE, SceneParams

RULES: tuple[str, ...] = ("dome_to_spire", "remove_watermark", "add_tree", "no_reflections")

RULE_CLASSES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "dome_to_spire": (("dome", "sky"), ("spire", "sky")),
    "remove_watermark": (("watermark",), ("sky", "ground", "wall", "window", "door", "tower", "water", "reflection")),
    "add_tree": (("ground", "wall", "window", "door", "tower", "water", "sky"), ("tree",)),
    "no_reflections": (("reflection",), ("water",)),
}
"""Per rule, the classes a changed pixel may have before and after the edit."""


def ideal_edit(params: SceneParams, rule: str) -> SceneParams:
    """The scenes `params` with `rule` applied; render them for the ideal edited images."""
    if rule == "dome_to_spire":
        top_kind = torch.where(params.top_kind == TOP_DOME, TOP_SPIRE, params.top_kind)
        return dataclasses.replace(params, top_kind=top_kind)
    if rule == "remove_watermark":
        return dataclasses.replace(params, watermark_present=torch.zeros_like(params.watermark_present))
    if rule == "add_tree":
        tree_present = params.tree_present.clone()
        tree_present[:, 0] = True
        return dataclasses.replace(params, tree_present=tree_present)
    if rule == "no_reflections":
        return dataclasses.replace(params, reflect=torch.zeros_like(params.reflect))
    raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
