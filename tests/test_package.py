"""The package's face: the usage example in `rewrite.__doc__` runs as written, and `import rewrite` is cheap."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

import rewrite


def _example() -> str:
    block = rewrite.__doc__.split("::\n", 1)[1].split("\n\n`rewrite.pipeline", 1)[0]
    return textwrap.dedent(block)


def test_the_docstring_example_edits_the_generator() -> None:
    code = _example()
    assert "RankOne().run(" in code and "load_state_dict" in code
    scope: dict = {}
    exec(compile(code, "rewrite.__doc__", "exec"), scope)
    adapter, result = scope["adapter"], scope["result"]
    (name,) = result.weights
    assert torch.equal(adapter.model.state_dict()[name], result.weights[name])
    assert result.delta is not None and result.delta.weight_delta().abs().sum() > 0


def test_import_rewrite_loads_neither_lightning_nor_torch() -> None:
    code = "import sys, rewrite; print(sorted(m for m in ('pytorch_lightning', 'torch', 'hydra') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
