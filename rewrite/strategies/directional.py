"""Settings shared by the strategies that change W only along directions D = C⁻¹K (or their ablations)."""

from __future__ import annotations

from dataclasses import dataclass

from rewrite.core.checks import check_range
from rewrite.core.keys import KEY_METHODS
from rewrite.strategies.base import StrategyConfig


@dataclass
class DirectionConfig(StrategyConfig):
    rank: int = 1
    key_method: str = "zca"  # zca | svd | mean | identity (no covariance: ablation)
    use_context: bool = True  # directions from the context regions (else from the paste site's keys)

    def check(self) -> None:
        check_range("strategy.rank", self.rank, 1)
        if self.key_method not in KEY_METHODS:
            raise ValueError(f"strategy.key_method must be one of {KEY_METHODS}, got {self.key_method!r}")
