"""The run configs the studio works with, composed by Hydra exactly as `python -m rewrite` composes them.

Why: an edit made on the page must be the edit the command line makes. So the studio keeps its choices as
command-line overrides (`generator=…`, `generator.layer=…`, `strategy=…`, `strategy.rank=…`), composes the
packaged config with them (plus the user's `--config-dir`, as `hydra.searchpath`), and the same overrides
with `edit.file=<request.yaml>` are the command that reproduces the edit.
"""

from __future__ import annotations

import copy
import shlex
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from rewrite.pipeline import CONF_DIR

FIXED = ("logger=none", "progress=false", "eval.perceptual=null")
"""Overrides of every studio run: no logger or progress bars, and no perceptual distance (a diagnostic that
costs seconds per run on a CPU; the scores do not use it). The reproducing command names them too."""

_COMPOSE = threading.Lock()  # Hydra's global state admits one composition at a time
COMPOSED_MEMO = 32  # composed configs kept (each run composes its own with edit.file=…, the page many small ones)


class Configs:
    """Compose run configs from the packaged configs and, optionally, a folder of the user's own."""

    def __init__(self, config_dir: str | Path | None = None, overrides: Sequence[str] = ()) -> None:
        self.config_dir = Path(config_dir).resolve() if config_dir else None
        if self.config_dir is not None and not self.config_dir.is_dir():
            raise FileNotFoundError(f"--config-dir {config_dir}: no such folder")
        self.overrides = [*FIXED, *overrides]  # the server's own (e.g. stats.num_samples for a quick start)
        self._composed: OrderedDict[tuple[str, ...], DictConfig] = OrderedDict()  # a composition costs ~0.3 s

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """The config `python -m rewrite <overrides>` runs with (a copy: callers may change it)."""
        key = tuple(overrides)
        with _COMPOSE:
            if key not in self._composed:
                search = [f"hydra.searchpath=[file://{self.config_dir}]"] if self.config_dir else []
                with initialize_config_dir(CONF_DIR, version_base="1.3"):
                    self._composed[key] = compose("config", overrides=[*search, *self.overrides, *overrides])
                while len(self._composed) > COMPOSED_MEMO:
                    self._composed.popitem(last=False)
            return copy.deepcopy(self._composed[key])

    def options(self, group: str) -> list[str]:
        """The names of a config group (`generator`, `strategy`, `edit`), packaged and the user's."""
        folders = [Path(CONF_DIR) / group] + ([self.config_dir / group] if self.config_dir else [])
        return sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.yaml")})

    def command(self, overrides: Sequence[str]) -> str:
        """The shell command that runs the same edit: `python -m rewrite <overrides>`."""
        words = ["python", "-m", "rewrite"]
        if self.config_dir:
            words += ["--config-dir", str(self.config_dir)]
        words += [*self.overrides, *overrides]
        return " ".join(shlex.quote(w) for w in words)
