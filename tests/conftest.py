"""Shared fixtures: tiny generators and problems, an isolated statistics cache, offline W&B."""

from __future__ import annotations

import os

import pytest
import torch

from rewrite.edit_request import EditRequest
from rewrite.generators.tiny import load_tiny
from rewrite.problem import EditProblem, build_problem
from rewrite.site import EditSite
from rewrite.stats import collect_key_moment

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

TINY_REQUEST = {
    "name": "tiny_box",
    "copy": {"seed": 1, "box": [4, 4, 10, 8]},
    "paste": {"seed": 2, "box": [6, 8, 12, 12]},
    "context": [{"seed": 3, "box": [4, 4, 12, 12]}, {"seed": 4, "box": [4, 4, 12, 12]}],
    "heldout": [{"seed": 10, "box": [4, 4, 10, 8]}, {"seed": 11, "box": [6, 8, 12, 12]}],
}


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWRITE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    torch.manual_seed(0)


@pytest.fixture
def one_thread() -> None:
    """The toy renderer's many small ops stall with 2 threads on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_problem(layer: str = "main.4", value_at: str | None = "main.6", request: dict | None = None) -> EditProblem:
    adapter = load_tiny()
    site = EditSite(adapter, layer, value_at)
    c = collect_key_moment(site, 64, 32, seed=0, progress=False).moment
    return build_problem(site, EditRequest.from_dict(request or TINY_REQUEST), c)


@pytest.fixture
def problem() -> EditProblem:
    return tiny_problem()
