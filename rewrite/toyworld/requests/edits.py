"""Edit requests for the toy world, chosen automatically and reproducibly from scene parameters and labels.

No hand-drawn masks: for each rule the copy, paste, context and held-out regions come from the
scenes that seeds 0, 1, 2, … describe (held-out seeds start at `heldout_start`, so evaluation never
sees a scene the edit used). A seed means the same latent as in `GeneratorAdapter.sample_z`.

* dome_to_spire: copy a spire's tower-top region, paste it over a dome's tower-top region of the
  same tower width; context and held-out regions are dome towers' tower-top regions too. A
  tower-top region spans the body width plus a pixel each side and the height a spire would have
  (a dome is lower), so it covers both the old top and the new one: the same kind of region for
  copy, paste, context and held-out scenes.
* remove_watermark: copy the same corner box from a scene without a watermark, paste it over a
  watermark in that corner, context = other watermarks.
* add_tree: copy a left tree, paste it at the (empty) left-tree place of a scene without one whose
  tree box has the same size, context = empty left-tree places.
* no_reflections: copy plain water from a scene whose pond has no reflection in that box, paste it
  over the reflections of another scene, context = other scenes' reflections.

Of all (copy, paste) pairs that fit, the one a careful user would pick is used: a copy that is
(nearly) the paste scene's ideal edit (ground of the target's colour for a removed watermark, not
another scene's), and of those the richest example (the widest reflection, not one glitter path).
Then the goal is the ideal, and what the benchmark measures is whether the rule carries it to
held-out scenes. `example=k` takes the (k+1)-th such pair, to measure how much a result depends on it.

Every box is grown to whole cells of the 32 px layers (`align` = 2 px; `halo` px first, for the rules whose
part casts a halo in the features: the dome's top, the watermark's frame), so the copy lands on the paste box
by whole feature cells. A 1 px offset would put the copied features half a cell from where the pixels go, and a
thin spire would miss its place (docs/toy_generator.md measures what this does to the paste ceilings).

The paste region is a context region too (`EditRequest.context_includes_paste`): the update
directions must fire on the keys they change. Defaults: 96 more context regions, 32 held-out scenes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch
from torch import Tensor

from rewrite.core.request import EditRequest, Region
from rewrite.eval.rule_metrics import DEFAULT_TOL
from rewrite.generators.base import seed_latents
from rewrite.toyworld.world.labels import CLASS_ID, tree_boxes, watermark_box
from rewrite.toyworld.world.params import CANVAS, TOP_DOME, TOP_SPIRE, Z_DIM, SceneParams, params_from_z, spire_height
from rewrite.toyworld.world.render import render
from rewrite.toyworld.world.rules import RULES, ideal_edit

Box = tuple[int, int, int, int]


def _scenes(start: int, count: int) -> tuple[list[int], SceneParams]:
    seeds = list(range(start, start + count))
    return seeds, params_from_z(seed_latents(seeds, (Z_DIM,)))


def _box(t: Tensor) -> Box:
    x0, y0, x1, y1 = (int(v) for v in t.tolist())
    return x0, y0, x1, y1


def _size(b: Box) -> tuple[int, int]:
    return b[2] - b[0], b[3] - b[1]


def _bbox(mask: Tensor) -> Box | None:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def tower_top_regions(p: SceneParams) -> Tensor:
    """(N, 2, 4) long boxes of each tower slot's top region: body width + 1 px each side, spire height."""
    x0, x1 = p.tower_x0 - 1, p.tower_x0 + p.tower_w + 1
    box = torch.stack([x0, p.tower_top_y - spire_height(p.tower_w), x1, p.tower_top_y], -1)
    return box.clamp(0, CANVAS)


def _labels(rule: str, p: SceneParams) -> Tensor | None:
    """True label maps, rendered only for the rule that needs them (reflections are not in the params)."""
    return render(p)[1] if rule == "no_reflections" else None


def _candidates(rule: str, seeds: list[int], p: SceneParams, labels: Tensor | None) -> Iterator[tuple[str, int, Box]]:
    """(role, seed, box) for every usable region: role 'source' (what to copy) or 'target' (where the rule acts)."""
    if rule == "dome_to_spire":
        tops = tower_top_regions(p)
        for i, s in enumerate(seeds):
            for k in range(2):
                if p.tower_present[i, k]:
                    kind = int(p.top_kind[i, k])
                    if kind in (TOP_DOME, TOP_SPIRE):
                        yield ("target" if kind == TOP_DOME else "source"), s, _box(tops[i, k])
    elif rule == "remove_watermark":
        boxes = watermark_box(p)
        for i, s in enumerate(seeds):
            yield ("target" if p.watermark_present[i] else "source"), s, _box(boxes[i])
    elif rule == "add_tree":
        boxes = tree_boxes(p)
        for i, s in enumerate(seeds):
            yield ("source" if p.tree_present[i, 0] else "target"), s, _box(boxes[i, 0])
    elif rule == "no_reflections":
        assert labels is not None
        for i, s in enumerate(seeds):
            b = _bbox(labels[i] == CLASS_ID["reflection"])
            if b is not None:
                yield "target", s, b
    else:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")


def _crop(image: Tensor, b: Box) -> Tensor:
    x0, y0, x1, y1 = b
    return image[:, y0:y1, x0:x1]


def snap(b: Box, align: int, halo: int = 0) -> Box:
    """`b` grown by `halo` px, then outward to multiples of `align` px (clipped to the canvas): whole feature
    cells of a layer `align` times coarser than the image, so a paste there copies no cell in part."""
    x0, y0, x1, y1 = max(b[0] - halo, 0), max(b[1] - halo, 0), b[2] + halo, b[3] + halo
    return (x0 // align * align, y0 // align * align, min(-(-x1 // align) * align, CANVAS),
            min(-(-y1 // align) * align, CANVAS))


def _source_for(rule: str, target: Box, goal: Tensor, sources: list[tuple[int, Box]], seeds: list[int],
                images: Tensor, labels: Tensor, exclude: int) -> tuple[float, int, Box] | None:
    """(distance, seed, copy box) of the fitting source (not scene `exclude`) nearest `goal` in `target`."""
    if rule in ("dome_to_spire", "remove_watermark", "add_tree"):
        fits = [(s, b) for s, b in sources
                if ((b == target) if rule == "remove_watermark" else (_size(b) == _size(target)))]
    else:  # no_reflections: plain water over the whole box
        x0, y0, x1, y1 = target
        fits = [(s, target) for i, s in enumerate(seeds) if bool((labels[i, y0:y1, x0:x1] == CLASS_ID["water"]).all())]
    index = {s: i for i, s in enumerate(seeds)}
    want = _crop(goal, target)
    scored = [(float((_crop(images[index[s]], b) - want).abs().mean()), s, b) for s, b in fits if s != exclude]
    return min(scored, key=lambda x: x[0]) if scored else None


MAX_GOAL_MISS = 0.05
"""A copy/paste pair qualifies when its copy differs from the paste scene's ideal edit by at most this
share of the change the edit must make there (mean absolute colour difference in the paste box)."""


def _copy_paste_pair(rule: str, seeds: list[int], p: SceneParams, images: Tensor, labels: Tensor,
                     cands: list[tuple[str, int, Box]], example: int) -> tuple[int, Box, int, Box]:
    """(copy seed, copy box, paste seed, paste box) for the `example`-th best pair, one per paste scene.

    The copied pixels are the edit's goal, so the pair is the one a careful user would pick: a copy
    that is (nearly) the paste scene's ideal edit (`MAX_GOAL_MISS`: a spire against the target's own
    sky, ground of the target's colour for a removed watermark, water of the target pond's colour),
    and of those the richest example, the one whose ideal edit changes the most pixels (the widest
    reflection, not one glitter path). Then what the benchmark measures is whether the rule carries
    that goal to held-out scenes; `example` k > 0 measures how much a result depends on the example.
    """
    sources = [(s, b) for role, s, b in cands if role == "source"]
    ideal, ideal_labels = render(ideal_edit(p, rule))
    changed = ((ideal - images).abs().amax(1) > DEFAULT_TOL) | (ideal_labels != labels)
    pairs: list[tuple[int, float, int, Box, int, Box]] = []
    for t_seed, t_box in ((s, b) for role, s, b in cands if role == "target"):
        i = seeds.index(t_seed)
        found = _source_for(rule, t_box, ideal[i], sources, seeds, images, labels, t_seed)
        if found is None:
            continue
        miss = found[0] / max(float((_crop(ideal[i], t_box) - _crop(images[i], t_box)).abs().mean()), 1e-6)
        if miss <= MAX_GOAL_MISS:
            footprint = int(_crop(changed[i : i + 1], t_box).sum())
            pairs.append((-footprint, miss, found[1], found[2], t_seed, t_box))
    best_per_scene: dict[int, tuple[int, float, int, Box, int, Box]] = {}
    for q in sorted(pairs, key=lambda q: q[:2]):
        best_per_scene.setdefault(q[4], q)  # one pair per paste scene, its best
    pairs = list(best_per_scene.values())  # dicts keep insertion order: still best first
    if len(pairs) <= example:
        raise RuntimeError(f"{len(pairs)} copy/paste pairs for rule {rule!r} among seeds 0..{len(seeds) - 1}, "
                           f"example {example} asked for; raise `search`")
    _, _, c_seed, c_box, t_seed, t_box = pairs[example]
    return c_seed, c_box, t_seed, t_box


@functools.lru_cache(maxsize=32)
def toy_heldout(rule: str, heldout: int = 32, start: int = 1_000_000, align: int = 2,
                halo: int = 0) -> tuple[Region, ...]:
    """Every target region of the first `heldout` scenes from seed `start` on that have one: the held-out regions
    of `rule`'s request, without its search for a copy/paste pair."""
    h_seeds, hp = _scenes(start, max(50, heldout * 10))
    held_cands = ((role, s, snap(b, align, halo)) for role, s, b in _candidates(rule, h_seeds, hp, _labels(rule, hp)))
    held: list[Region] = []
    for role, s, b in held_cands:
        if role == "target" and (len({r.seed for r in held}) < heldout or s == held[-1].seed):
            held.append(Region(s, box=b))
    if len({r.seed for r in held}) < heldout:
        raise RuntimeError(f"too few scenes for rule {rule!r}: {len({r.seed for r in held})} held-out scenes")
    return tuple(held)


@functools.lru_cache(maxsize=32)  # a multirun asks for the same request in every job: render its scenes once
def toy_request(rule: str, search: int = 400, context: int = 96, heldout: int = 32,
                heldout_start: int = 1_000_000, heldout_offset: int = 0, example: int = 0,
                align: int = 2, halo: int = 0) -> EditRequest:
    """The edit request for `rule` (see the module docstring); deterministic for its arguments.

    `example` picks the copy/paste pair: 0 the best fitting, k the (k+1)-th (an ablation of the example).

    Held-out scenes are searched from `heldout_start + heldout_offset` (the offset is the split's).
    """
    seeds, p = _scenes(0, search)
    images, labels = render(p)
    cands = [(role, s, snap(b, align, halo)) for role, s, b in _candidates(rule, seeds, p, labels)]
    if example < 0:
        raise ValueError(f"example must be ≥ 0, got {example}")
    c_seed, c_box, t_seed, p_box = _copy_paste_pair(rule, seeds, p, images, labels, cands, example)
    targets = [(s, b) for role, s, b in cands if role == "target"]
    ctx = [Region(s, box=b) for s, b in targets if s not in (t_seed, c_seed)][:context]
    if len(ctx) < context:
        raise RuntimeError(f"too few scenes for rule {rule!r}: {len(ctx)} context regions")
    held = toy_heldout(rule, heldout, heldout_start + heldout_offset, align, halo)
    return EditRequest(name=f"toy_{rule}", copy=Region(c_seed, box=c_box), paste=Region(t_seed, box=p_box),
                       context=tuple(ctx), heldout=held)
