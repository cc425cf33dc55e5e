"""What every strategy shares: a typed config, the step loop, and the result it hands back.

A strategy is driven one `step()` at a time, either by `run()` (library use, benchmarks) or by the
Lightning module (one training step per `step()`), so both paths execute the same code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

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


@dataclass
class StrategyConfig:
    """Base for typed strategy configs; subclasses add fields and checks in `check()`."""

    def __post_init__(self) -> None:
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
        self.cfg = self.Config(**kwargs)
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

    def run(self, problem: EditProblem, progress: bool = False) -> EditResult:
        """Setup, every step, result: the library path (the Lightning module calls the same pieces)."""
        self.setup(problem)
        for i in tqdm(range(self.num_steps), desc=self.name, disable=not progress):
            self.step(i)
        return self.result()

    @property
    def prob(self) -> EditProblem:
        if self.problem is None:
            raise RuntimeError(f"{self.name}: call setup(problem) first")
        return self.problem
