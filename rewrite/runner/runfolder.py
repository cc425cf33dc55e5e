"""What makes a run folder complete and fresh: the run (`rewrite.cli`) writes these; tables, rescore and the
benchmark read run folders back only through `read_run`, so a killed or stale run is never read as a result."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

METRICS_FILE = "metrics.json"  # a run's last file: its presence means the run finished
RUN_OVERRIDES = "hydra_overrides"  # metrics.json key: the overrides the metrics were made with (null outside Hydra)
LEGACY_LAST_FILE = "config.yaml"  # what runs wrote last before metrics.json was last (their metrics lack the key)
HISTORY_DIR = "metrics_history"  # earlier metrics.json files of the run, kept by rescore
HYDRA_OVERRIDES = Path(".hydra") / "overrides.yaml"

class IncompleteRun(ValueError):
    """A run folder that holds no finished run's results: missing, unreadable or stale metrics."""


def read_run(folder: Path) -> tuple[list[str] | None, dict[str, object]]:
    """The overrides (`.hydra/overrides.yaml`; None outside Hydra) and the metrics of a complete run folder.

    A run writes metrics.json last and records in it the overrides it ran with, so the folder is complete when
    metrics.json is there and fresh when that record equals `.hydra/overrides.yaml` (Hydra rewrites that at the
    start of a re-run; one that fails before writing leaves the earlier metrics beside other overrides). Folders
    from before the record count as complete when their last file, config.yaml, is there. Raises IncompleteRun
    saying why the folder cannot be read as a result.
    """
    path = folder / METRICS_FILE
    if not path.is_file():
        raise IncompleteRun(f"no {METRICS_FILE}: failed, killed or still running")
    try:
        metrics = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise IncompleteRun(f"unreadable {METRICS_FILE} ({e})") from None
    if not isinstance(metrics, dict):
        raise IncompleteRun(f"{METRICS_FILE} holds a JSON {type(metrics).__name__}, not an object of metrics")
    overrides = _overrides(folder)
    if RUN_OVERRIDES not in metrics:
        if not (folder / LEGACY_LAST_FILE).is_file():
            raise IncompleteRun(f"{METRICS_FILE} without {LEGACY_LAST_FILE}: killed while writing its files")
    elif overrides is not None and metrics[RUN_OVERRIDES] != overrides:
        raise IncompleteRun(f"stale: {METRICS_FILE} was written for overrides {metrics[RUN_OVERRIDES]}, but "
                            f"{HYDRA_OVERRIDES} says {overrides} (a re-run into this folder did not finish)")
    return overrides, metrics


def _overrides(folder: Path) -> list[str] | None:
    path = folder / HYDRA_OVERRIDES
    if not path.is_file():
        return None
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(path)) or []
    except Exception as e:  # YAML and OmegaConf errors share no base class
        raise IncompleteRun(f"unreadable {HYDRA_OVERRIDES} ({e})") from None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise IncompleteRun(f"{HYDRA_OVERRIDES} is not a list of overrides")
    return overrides


def skipped_message(skipped: dict[str, str], what: str = "job") -> str:
    """One line naming every skipped folder and why."""
    return (f"skipped {len(skipped)} incomplete {what} folder(s): "
            + "; ".join(f"{name} ({why})" for name, why in skipped.items()))
