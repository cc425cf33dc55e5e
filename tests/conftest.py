"""Shared fixtures: tiny generators and problems, an isolated statistics cache, offline W&B."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rewrite.core.problem import EditProblem
from rewrite.pipeline import CONF_DIR, build_edit

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWRITE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread() -> None:
    """One intra-op thread for a test module (`pytestmark = pytest.mark.usefixtures("one_thread")`): on a
    small shared CPU, torch's thread barriers stall (several times slower) whenever another process holds
    a core, and the toy renderer's ops are short. Module-wide, so module fixtures that render get it too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_problem(layer: str = "main.4", value_at: str | None = "main.6", request: dict | None = None) -> EditProblem:
    """The tiny generator's edit problem (`conf/edit/tiny_box.yaml` unless `request` is given), built by the
    same pipeline as a run (`rewrite.pipeline.build_edit`), statistics from 64 samples, uncached."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[
            "generator=tiny", "edit=tiny_box", f"generator.layer={layer}", f"generator.value_at={value_at or 'null'}",
            "stats.num_samples=64", "stats.batch_size=32", "stats.cache_dir=null", "progress=false"])
    if request is not None:
        cfg.edit = OmegaConf.create(request)
    return build_edit(cfg)[3]


@pytest.fixture
def problem() -> EditProblem:
    return tiny_problem()


def warns_and_goes_on(caplog: pytest.LogCaptureFixture, message: str, call: Callable[[], object]) -> None:
    """A bad-input row answered by a logged warning, not an error: the call returns and the log says `message`."""
    with caplog.at_level(logging.WARNING):
        call()
    assert message in caplog.text
