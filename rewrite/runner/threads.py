"""Torch threads per job when a launcher runs jobs side by side: never more threads than cores in total.

Why: two torch processes with default threads on one machine slowed small edits 10-60x here (oversubscription).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def jobs_side_by_side(launcher: Mapping[str, Any], cores: int) -> int:
    """How many jobs the Hydra launcher config runs at once on this machine (1 for the basic launcher)."""
    target = str(launcher.get("_target_", ""))
    if "joblib" in target.lower():
        n_jobs = int(launcher.get("n_jobs") or 1)
        return cores if n_jobs < 0 else max(1, min(n_jobs, cores))  # joblib: -1 = one job per core
    return 1


def threads_per_job(launcher: Mapping[str, Any] | None, requested: int | None = None,
                    cores: int | None = None) -> int | None:
    """`requested` (the run's `torch_threads`) if set; else cores // jobs side by side when the joblib launcher runs
    more than one at a time; under submitit (SLURM, or local, which starts every job of the sweep at once) the job's
    `cpus_per_task`, 1 when unset; None leaves torch's default."""
    if requested:
        return int(requested)
    if launcher is None:
        return None
    target = str(launcher.get("_target_", "")).lower()
    if "submitit" in target:
        return int(launcher.get("cpus_per_task") or 1)
    cores = cores or os.cpu_count() or 1
    jobs = jobs_side_by_side(launcher, cores)
    return max(1, cores // jobs) if jobs > 1 else None
