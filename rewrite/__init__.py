"""rewrite: rewrite one rule inside a pretrained image generator by editing one layer as a linear
associative memory, and compare that against baselines.

From Python, without Hydra (the tiny random generator here; any `GeneratorAdapter` works the same)::

    from rewrite import EditRequest, build_problem, key_statistics, make_site
    from rewrite.generators.tiny import load_tiny
    from rewrite.strategies.rank_one import RankOne

    adapter = load_tiny()                                   # a generator behind the adapter interface
    site = make_site(adapter, "main.4", value_at="main.6")  # the layer to edit, its value after BN + ReLU
    request = EditRequest.from_dict({"name": "box", "copy": {"seed": 1, "box": [4, 4, 10, 8]},
                                     "paste": {"seed": 2, "box": [6, 8, 12, 12]}})
    stats = key_statistics(site, cache=None, num_samples=64, progress=False)
    result = RankOne().run(build_problem(site, request, stats.moment))
    adapter.model.load_state_dict(result.weights, strict=False)  # the edited weights, in place

`rewrite.pipeline.build_edit(cfg)` builds the same from a config, and `python -m rewrite` (`rewrite.cli`) runs
a whole job: edit, metrics, pictures, an edit file. The rooms: `core/` (the method), `strategies/`,
`generators/`, `eval/` (scoring), `runner/` (run plumbing), `editfile/` (edit files and `rewrite-edit`),
`bench/` (benchmarks over runs) and `toyworld/` (a world whose ideal edits are known).

The names below are loaded on first use, so `import rewrite` itself stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "EditRequest": "rewrite.core.request",
    "Region": "rewrite.core.request",
    "make_site": "rewrite.core.site",
    "key_statistics": "rewrite.core.stats",
    "build_problem": "rewrite.core.problem",
    "GeneratorAdapter": "rewrite.generators.base",
    "EditResult": "rewrite.strategies.base",
    "build_edit": "rewrite.pipeline",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rewrite' has no attribute {name!r}")
