"""The scorer protocol: what `eval.scorers` entries build (e.g. `rewrite.toyworld.requests.score`)."""

from __future__ import annotations

from typing import Protocol


class Scorer(Protocol):
    """Extra metrics that snapshot the unedited model when built and score the edit afterwards.

    Configured under `eval.scorers`. A scorer that also has `ideal(z) -> images in [-1, 1]` (the
    exactly known edited images, e.g. the toy world's) gives the grid its last column.
    """

    def metrics(self) -> dict[str, float]: ...
