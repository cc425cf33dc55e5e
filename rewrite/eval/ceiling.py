"""The paste ceiling: what the pasted features themselves draw at a layer, scored like the edit.

Before any fit, replace the edited layer's value by v* (the copied features pasted in) and generate:
the target image made that way shows what a perfect fit at this layer could draw, and the held-out
scenes with the copied features pasted at *their* regions show what a perfect rule could draw there.
Scored by the same scorer and rules as `efficacy` / `generality`, this is the ceiling beside the score:
a score far below its ceiling is the fit's fault, a low ceiling is the layer's (or the generator's).
Held-out scenes count only where every region of the scene has the copied region's size (the
features are pasted, not resized) and lies a whole number of the value's cells from it (else the paste
would land up to half a cell off where a rule would draw the part, and score the rounding, not the
layer); `n_ceiling_heldout` says how many did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from rewrite.core.erase import erase_value
from rewrite.core.problem import EditProblem, on_grid, paste, paste_offset
from rewrite.core.request import EditRequest, Region, resample
from rewrite.core.site import EditSite, as_map
from rewrite.eval.scorer import Scorer


@contextmanager
def values_replaced(site: EditSite, values: Mapping[int, tuple[Tensor, Tensor]]) -> Iterator[None]:
    """While active, every forward pass of the generator draws `value` in place of the layer's value for
    each batch row whose latent equals a key's `z` (`values`: seed -> (z (1, ...), value (1, ...)));
    other rows are drawn as usual. So any scorer, generating as it always does, sees the pasted scenes."""
    current: dict[str, Tensor] = {}  # the latents of the forward pass under way

    def remember_z(_m: torch.nn.Module, args: tuple[Tensor, ...]) -> None:
        current["z"] = args[0]

    def substitute(_m: torch.nn.Module, _inp: tuple[Tensor, ...], out: Tensor) -> Tensor:
        z = current["z"]
        out = out.clone()
        for zs, value in values.values():
            hit = (z.reshape(len(z), -1) == zs.reshape(1, -1).to(z)).all(1)
            if bool(hit.any()):
                out[hit] = value.to(out)
        return out

    handles = [site.adapter.model.register_forward_pre_hook(remember_z),
               site.value_module.register_forward_hook(substitute)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def ceiling_values(problem: EditProblem) -> tuple[dict[int, tuple[Tensor, Tensor]], EditRequest]:
    """v* of the target and of every held-out scene whose regions all take the copied region (pasted, or
    erased for an erase request), by seed; and the request with only those held-out regions."""
    site, req, size = problem.site, problem.request, problem.size
    adapter = site.adapter
    values: dict[int, tuple[Tensor, Tensor]] = {req.paste.seed: (problem.z_target, problem.target_value)}
    src = site.capture(problem.z_source).value if not req.is_erase else None
    copy_mask = req.copy.mask(size) if req.copy is not None else None
    kept: list[Region] = []
    by_seed: dict[int, list[Region]] = {}
    for r in req.heldout:
        by_seed.setdefault(r.seed, []).append(r)
    for seed, regions in by_seed.items():
        if seed == req.paste.seed:
            continue
        z = adapter.sample_z([seed])
        value = site.capture(z).value
        ok = True
        for r in regions:
            if req.is_erase:
                assert problem.erase_units is not None
                value = erase_value(value, problem.erase_units, resample(r.mask(size), *as_map(value).shape[-2:]))
                continue
            offset = paste_offset(req.copy, r, size)
            if offset is None or not on_grid(offset, size, *as_map(value).shape[-2:]):
                ok = False
                break
            value, _ = paste(src, value, copy_mask, offset, size)
        if ok:
            values[seed] = (z, value)
            kept += regions
    return values, dataclasses.replace(req, heldout=tuple(kept))


def paste_ceiling(problem: EditProblem, make_scorers: Callable[[EditRequest], Sequence[Scorer]]) -> dict[str, float]:
    """`ceiling_efficacy`, `ceiling_generality` and `n_ceiling_heldout` of the (unedited) model at the
    problem's layer: the headline `efficacy`, `generality` and `n_heldout` of the scorers `make_scorers(request)`
    builds on the unedited model (merged in order, later ones winning, as a run merges them), for the request
    with only the held-out regions that take the paste. With no such region the scorers get the whole request
    and only the efficacy is a ceiling."""
    values, request = ceiling_values(problem)
    scorers = make_scorers(request if request.heldout else problem.request)
    m: dict[str, float] = {}
    with values_replaced(problem.site, values):
        for scorer in scorers:
            m.update(scorer.metrics())
    pasted = bool(request.heldout)
    return {"ceiling_efficacy": float(m["efficacy"]),
            "ceiling_generality": float(m["generality"]) if pasted else float("nan"),
            "n_ceiling_heldout": int(m.get("n_heldout", 0)) if pasted else 0}
