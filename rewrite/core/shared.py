"""Work that does not depend on the strategy, done once per process and reused by the jobs of a multirun.

The jobs of a Hydra multirun run in one process (the basic launcher; each worker of the joblib launcher
runs several). When a sweep varies only the strategy or its settings, every job would otherwise rebuild
the same edit problem (v*, context keys, C), the same snapshot of the unedited model for scoring and the
same paste ceiling. Each store here keys its values by everything they depend on (the statistics' spec,
which holds the weights' sha256, the layer, the whole request, the scoring settings), so a changed weight,
layer or request is a new key and a reused value is never stale; the least recently used entries go first.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def key_of(*parts: Any) -> str:
    """A store key from JSON-able parts (dataclasses as dicts; other objects by their str)."""
    return json.dumps(parts, sort_keys=True, default=str)


class SharedStore:
    """A named, bounded least-recently-used memo with hit and miss counts (the tests and the log read them)."""

    def __init__(self, name: str, size: int) -> None:
        if size < 1:
            raise ValueError(f"shared store {name!r}: size must be ≥ 1, got {size}")
        self.name, self.size = name, size
        self.entries: OrderedDict[str, Any] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: str, compute: Callable[[], T]) -> T:
        """The value stored under `key`, computed by `compute()` (and stored) the first time."""
        if key in self.entries:
            self.hits += 1
            self.entries.move_to_end(key)
            log.debug("shared %s: reused", self.name)
            return self.entries[key]
        value = compute()  # an exception stores nothing
        self.misses += 1
        self.entries[key] = value
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self.entries.clear()
        self.hits = self.misses = 0


STORES: dict[str, SharedStore] = {}


def store(name: str, size: int = 16) -> SharedStore:
    """The process's store called `name` (made on first use)."""
    if name not in STORES:
        STORES[name] = SharedStore(name, size)
    return STORES[name]


def clear_all() -> None:
    """Forget every shared value (tests; a notebook that wants a cold start)."""
    for s in STORES.values():
        s.clear()


def counts() -> dict[str, tuple[int, int]]:
    """(hits, misses) per store."""
    return {name: (s.hits, s.misses) for name, s in STORES.items()}
