"""An edit as a small, self-describing file: what changed, how, and on which base weights.

`edit.safetensors` holds, for a low-rank edit, the factors of ΔW = Λ Dᵀ of one layer (`<weight>.lam`,
`<weight>.directions`: a few KB), and for any other edit the new values of the tensors it changed
(`<name>.value`). Its metadata names the layer, the model, the sha256 of the base weights (the
whole state dict, as `state_fingerprint` computes it), the request and the strategy config (JSON),
so an edit can be kept, shared, checked against a base and combined with others
(`rewrite.editfile.cli`). It also holds the sha256 of its own tensors (`tensors_sha256`): flipped bits
in the tensor data would otherwise apply silently as wrong weights. Only finite tensors are saved, and
a file is read only when every metadata entry has the type it should.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from rewrite.core.files import atomic_write, state_fingerprint
from rewrite.strategies.base import EditResult, LowRankDelta

log = logging.getLogger(__name__)

FORMAT = "rewrite-edit/1"
KINDS = ("low_rank", "replace")
CHECKSUM_KEY = "tensors_sha256"  # absent in files written before it existed: those load with a warning
_SHA256 = re.compile(r"[0-9a-f]{64}")


class WrongBaseError(ValueError):
    """An edit was made on other weights than the ones it is being applied to."""


@dataclass
class EditArtifact:
    """One edit: `tensors` (factors or new values) plus what it needs to be checked and reproduced."""

    kind: str  # "low_rank" (ΔW = Λ Dᵀ on `layer`) or "replace" (new values of the tensors in `changed`)
    layer: str  # the edited weight's name in the generator's state dict ("" for a replace of many tensors)
    base_sha256: str
    tensors: dict[str, Tensor]
    in_axis: int = -1  # low_rank: the weight axis D multiplies
    model: str = ""
    strategy: dict[str, Any] = field(default_factory=dict)
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> list[str]:
        """Names of the state-dict tensors this edit changes."""
        if self.kind == "low_rank":
            return [self.layer]
        return sorted(k.removesuffix(".value") for k in self.tensors)

    @classmethod
    def from_result(cls, result: EditResult, base_sha256: str, model: str = "",
                    strategy: Mapping[str, Any] | None = None, request: Mapping[str, Any] | None = None
                    ) -> EditArtifact:
        """The artifact of a strategy's result: its low-rank factors when it has them, else the new values."""
        extra = {"model": model, "strategy": dict(strategy or {}), "request": dict(request or {})}
        d = result.delta
        if d is not None and set(result.weights) == {d.weight_name}:
            return cls("low_rank", d.weight_name, base_sha256,
                       {f"{d.weight_name}.lam": d.lam, f"{d.weight_name}.directions": d.directions},
                       in_axis=d.in_axis, **extra)
        layer = next(iter(result.weights)) if len(result.weights) == 1 else ""
        return cls("replace", layer, base_sha256, {f"{k}.value": v for k, v in result.weights.items()}, **extra)

    def delta(self) -> LowRankDelta:
        if self.kind != "low_rank":
            raise ValueError(f"a {self.kind!r} edit has no low-rank factors")
        return LowRankDelta(self.layer, self.tensors[f"{self.layer}.directions"], self.tensors[f"{self.layer}.lam"],
                            self.in_axis)

    def new_values(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The changed tensors' values after applying the edit to `state` (a full state dict).

        Computed exactly as the strategies compute their results (W0 + Λ Dᵀ), so a run's edited
        weights and base + its edit file agree bit for bit. Refuses weights the edit was not made on.
        """
        missing = [k for k in self.changed if k not in state]
        if missing:
            raise WrongBaseError(f"the base has no tensor {missing[0]!r} that this edit changes "
                                 f"(edit made on {self.model or 'another model'})")
        got = state_fingerprint(state)
        if got != self.base_sha256:
            raise WrongBaseError(f"this edit was made on weights with sha256 {self.base_sha256[:16]}…, "
                                 f"not on these ({got[:16]}…); apply it to the base it was made on "
                                 f"(model {self.model or '?'}), or to the stack of edits that preceded it")
        if self.kind == "replace":
            out = {k: self.tensors[f"{k}.value"] for k in self.changed}
            for k, v in out.items():
                if v.shape != state[k].shape:
                    raise WrongBaseError(f"{k}: the edit holds shape {tuple(v.shape)}, "
                                         f"the base {tuple(state[k].shape)}")
            return out
        w0 = state[self.layer]
        delta = self.delta()
        r = delta.directions.shape[1]
        want_lam = list(w0.shape)
        if not -w0.dim() <= self.in_axis < w0.dim():
            raise WrongBaseError(f"{self.layer}: the edit's in_axis {self.in_axis} does not exist in the base "
                                 f"weight of shape {tuple(w0.shape)}")
        want_lam[self.in_axis] = r
        want_d = (w0.shape[self.in_axis], r)
        if tuple(delta.lam.shape) != tuple(want_lam) or tuple(delta.directions.shape) != want_d:
            raise WrongBaseError(f"{self.layer}: the edit's factors (Λ {tuple(delta.lam.shape)}, D "
                                 f"{tuple(delta.directions.shape)}) do not fit the base weight of shape "
                                 f"{tuple(w0.shape)} (it needs Λ {tuple(want_lam)}, D {want_d})")
        return {self.layer: w0.detach() + delta.weight_delta()}

    def save(self, path: str | Path) -> Path:
        """Write the edit file with a checksum of its tensors; NaN/Inf is refused (only finite numbers may
        become weights)."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        bad = _non_finite(tensors)
        if bad:
            raise ValueError(f"refusing to save edit file {path}: tensor {bad[0]!r} holds NaN/Inf "
                             "(only finite numbers may become weights)")
        meta = {"format": FORMAT, "kind": self.kind, "layer": self.layer, "base_sha256": self.base_sha256,
                "in_axis": str(self.in_axis), "model": self.model, "changed": json.dumps(self.changed),
                "strategy": json.dumps(self.strategy, sort_keys=True),
                "request": json.dumps(self.request, sort_keys=True), CHECKSUM_KEY: state_fingerprint(tensors)}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> EditArtifact:
        """Read an edit file; a missing, corrupt, altered or malformed file is a clear FileNotFoundError /
        ValueError naming the file and the problem (never a bare KeyError or a torch shape error later)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"edit file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable edit file (corrupt or not safetensors: {e})") from e
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a rewrite edit file (format {meta.get('format')!r}, expected {FORMAT!r})")
        kind = meta.get("kind", "")
        if kind not in KINDS:
            raise ValueError(f"{path}: unknown edit kind {kind!r}; expected one of {KINDS}")
        missing = [k for k in ("layer", "base_sha256", "in_axis", "changed") if k not in meta]
        if missing:
            raise ValueError(f"{path}: the edit file's metadata has no {missing[0]!r} (incomplete or altered)")
        _check_checksum(path, meta, tensors)
        if not _SHA256.fullmatch(meta["base_sha256"]):
            raise ValueError(f"{path}: metadata 'base_sha256' must be 64 hex digits, got {meta['base_sha256']!r}")
        try:
            in_axis = int(meta["in_axis"])
        except ValueError:
            raise ValueError(f"{path}: metadata 'in_axis' must be an integer, got {meta['in_axis']!r}") from None
        changed = _json_meta(path, meta, "changed", list)
        if not all(isinstance(k, str) for k in changed):
            raise ValueError(f"{path}: metadata 'changed' must be a JSON list of tensor names, got {changed!r}")
        art = cls(kind, meta["layer"], meta["base_sha256"], tensors, in_axis, meta.get("model", ""),
                  _json_meta(path, meta, "strategy", dict), _json_meta(path, meta, "request", dict))
        expected = ({f"{art.layer}.lam", f"{art.layer}.directions"} if kind == "low_rank"
                    else {f"{k}.value" for k in changed})
        if set(tensors) != expected:
            raise ValueError(f"{path}: holds tensors {sorted(tensors)}, expected {sorted(expected)}")
        bad = _non_finite(tensors)
        if bad:
            raise ValueError(f"{path}: tensor {bad[0]!r} holds NaN/Inf; only finite numbers may become weights")
        if kind == "low_rank":
            _check_factors(path, art)
        return art


def _non_finite(tensors: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN/Inf, in name order."""
    return sorted(k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))


def _check_checksum(path: Path, meta: Mapping[str, str], tensors: Mapping[str, Tensor]) -> None:
    """Refuse tensors whose sha256 is not the one saved with them; warn for files older than the checksum."""
    want = meta.get(CHECKSUM_KEY)
    if want is None:
        log.warning("%s has no checksum of its tensors (written before edit files had one): "
                    "it cannot be checked for corruption", path)
        return
    got = state_fingerprint(tensors)
    if got != want:
        raise ValueError(f"checksum mismatch: {path} was changed or corrupted (its tensors have sha256 "
                         f"{got[:16]}…, the file records {want[:16]}…)")


def _json_meta(path: Path, meta: Mapping[str, str], key: str, kind: type[dict] | type[list]) -> Any:
    """Metadata entry `key` parsed as JSON of type `kind` (an absent optional entry is empty)."""
    try:
        value = json.loads(meta.get(key, "{}" if kind is dict else "[]"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: metadata {key!r} is not valid JSON ({e})") from None
    if not isinstance(value, kind):
        what = "object" if kind is dict else "list"
        raise ValueError(f"{path}: metadata {key!r} must be a JSON {what}, got {type(value).__name__}")
    return value


def _check_factors(path: Path, art: EditArtifact) -> None:
    """Λ and D of a low-rank edit agree with each other (their fit to a base is checked in `new_values`)."""
    d = art.tensors[f"{art.layer}.directions"]
    lam = art.tensors[f"{art.layer}.lam"]
    ok = (d.dim() == 2 and d.is_floating_point() and lam.is_floating_point()
          and -lam.dim() <= art.in_axis < lam.dim() and lam.shape[art.in_axis] == d.shape[1])
    if not ok:
        raise ValueError(f"{path}: malformed low-rank factors: D {tuple(d.shape)} ({d.dtype}) must be (in, r) "
                         f"floats and Λ {tuple(lam.shape)} ({lam.dtype}) floats with r on axis {art.in_axis}")
