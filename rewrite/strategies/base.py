"""What every strategy shares: a typed config, the step loop, and the result it hands back.

A strategy is driven one `step()` at a time, either by `run()` (library use, benchmarks) or by the
Lightning module (one training step per `step()`), so both paths execute the same code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from rewrite.core.checks import KINDS, check_type
from rewrite.core.problem import EditProblem


@dataclass
class LowRankDelta:
    """ΔW = Λ Dᵀ for one layer's weight: small to store, stackable and undoable."""

    weight_name: str
    directions: Tensor  # D (in, r), orthonormal columns
    lam: Tensor  # Λ: the weight's layout with `in` replaced by r
    in_axis: int

    def weight_delta(self) -> Tensor:
        d = self.directions.to(self.lam.dtype)
        return (self.lam.movedim(self.in_axis, -1) @ d.T).movedim(-1, self.in_axis)

    def state_dict(self) -> dict[str, Tensor]:
        return {"directions": self.directions.contiguous(), "lam": self.lam.contiguous()}


@dataclass
class EditResult:
    """New values for the tensors the edit changed (names in the generator's state dict)."""

    weights: dict[str, Tensor]
    delta: LowRankDelta | None = None

    def non_finite(self) -> list[str]:
        """Names of the tensors holding NaN/Inf (new values, or a low-rank delta's Λ and D): only finite numbers
        may become weights or an edit file."""
        tensors = dict(self.weights)
        if self.delta is not None:
            name = self.delta.weight_name
            tensors.update({f"{name} Λ": self.delta.lam, f"{name} D": self.delta.directions})
        return sorted(name for name, t in tensors.items() if not bool(torch.isfinite(t).all()))


@dataclass
class StrategyConfig:
    """Base for typed strategy configs; subclasses add fields and range checks in `check()`.

    Every field is checked against its annotation (int, float, bool, str) before `check()`, so a value typed
    on the command line (`strategy.rank=1.5`, `strategy.lr=abc`, `strategy.lr=inf`) is refused, naming its
    key, when the strategy is built, before any statistics are computed; an integer given for a float
    field becomes a float.
    """

    def __post_init__(self) -> None:
        for f in fields(self):
            # `f.type` is the annotation's text under `from __future__ import annotations`, else the type
            kind = next((k for k in KINDS if f.type in (k, k.__name__)), None)
            if kind is not None:
                setattr(self, f.name, check_type(f"strategy.{f.name}", getattr(self, f.name), kind))
        self.check()

    def check(self) -> None:
        """Raise ValueError on an impossible setting (overridden by subclasses)."""


class Strategy(ABC):
    """One way of rewriting the model for an EditProblem."""

    Config: ClassVar[type[StrategyConfig]] = StrategyConfig
    name: ClassVar[str] = "strategy"

    def __init__(self, **kwargs: Any) -> None:
        known = {f.name for f in fields(self.Config)}
        unknown = set(kwargs) - known
        if unknown:
            raise TypeError(f"{self.name}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        try:
            self.cfg = self.Config(**kwargs)
        except ValueError as e:  # the message names the key; this names the strategy
            raise ValueError(f"{self.name}: {e}") from e
        self.problem: EditProblem | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    @abstractmethod
    def setup(self, problem: EditProblem) -> None:
        """Prepare parameters (and `self.optimizer` if the strategy iterates)."""

    @property
    @abstractmethod
    def num_steps(self) -> int: ...

    @abstractmethod
    def step(self, index: int) -> Tensor:
        """One iteration; returns the loss it saw (detached)."""

    @abstractmethod
    def result(self) -> EditResult: ...

    def run(self, problem: EditProblem, progress: bool = False,
            on_step: Callable[[int], None] | None = None) -> EditResult:
        """Setup, every step, result: the library path (the Lightning module calls the same pieces).
        `on_step(i)` is called after step i (e.g. the studio's progress bar)."""
        self.setup(problem)
        for i in tqdm(range(self.num_steps), desc=self.name, disable=not progress):
            self.check_loss(i, self.step(i))
            if on_step is not None:
                on_step(i)
        return self.checked_result()

    def check_loss(self, index: int, loss: Tensor) -> None:
        """A NaN/Inf loss ends the fit at once: no later step can bring back finite weights."""
        if not bool(torch.isfinite(loss).all()):
            raise self.diverged(f"the loss is {float(loss)} at step {index + 1}")

    def checked_result(self) -> EditResult:
        """`result()`, refused when it holds NaN/Inf (`EditResult.non_finite`)."""
        res = self.result()
        bad = res.non_finite()
        if bad:
            raise self.diverged(f"NaN/Inf in {', '.join(bad)}")
        return res

    def diverged(self, what: str) -> RuntimeError:
        hint = "; try a smaller strategy.lr" if hasattr(self.cfg, "lr") else ""
        return RuntimeError(f"{self.name}: the fit diverged ({what}); the edit is refused{hint}")

    @property
    def prob(self) -> EditProblem:
        if self.problem is None:
            raise RuntimeError(f"{self.name}: call setup(problem) first")
        return self.problem
