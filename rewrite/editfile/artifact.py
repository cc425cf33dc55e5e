"""An edit as a small, self-describing file: what changed, how, and on which base weights.

`edit.safetensors` holds, for a low-rank edit, the factors of ΔW = Λ Dᵀ of one layer (`<weight>.lam`,
`<weight>.directions`: a few KB), and for any other edit the new values of the tensors it changed
(`<name>.value`). Its metadata names the layer, the model, the sha256 of the base weights (the
whole state dict, as `state_fingerprint` computes it), the request and the strategy config (JSON),
so an edit can be kept, shared, checked against a base and combined with others
(`rewrite.editfile.cli`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from rewrite.core.files import atomic_write, state_fingerprint
from rewrite.strategies.base import EditResult, LowRankDelta

FORMAT = "rewrite-edit/1"
KINDS = ("low_rank", "replace")


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
        return {self.layer: w0.detach() + self.delta().weight_delta()}

    def save(self, path: str | Path) -> Path:
        meta = {"format": FORMAT, "kind": self.kind, "layer": self.layer, "base_sha256": self.base_sha256,
                "in_axis": str(self.in_axis), "model": self.model, "changed": json.dumps(self.changed),
                "strategy": json.dumps(self.strategy, sort_keys=True),
                "request": json.dumps(self.request, sort_keys=True)}
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> EditArtifact:
        """Read an edit file; a missing, corrupt or foreign file is a clear ValueError / FileNotFoundError."""
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
        art = cls(kind, meta["layer"], meta["base_sha256"], tensors, int(meta["in_axis"]), meta.get("model", ""),
                  json.loads(meta.get("strategy", "{}")), json.loads(meta.get("request", "{}")))
        expected = ({f"{art.layer}.lam", f"{art.layer}.directions"} if kind == "low_rank"
                    else {f"{k}.value" for k in json.loads(meta.get("changed", "[]"))})
        if set(tensors) != expected:
            raise ValueError(f"{path}: holds tensors {sorted(tensors)}, expected {sorted(expected)}")
        return art
