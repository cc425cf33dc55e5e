"""Optuna search over a strategy's search space: the grid experiment's space, searched by a seeded TPE sampler.

    python -m rewrite -m +experiment=search_toy_rank_one edit=toy_add_tree split=validation \\
        hydra/sweeper=optuna_tpe hydra.sweeper.n_trials=8 hydra.sweep.dir=multirun/optuna_rank_one
    python -m rewrite.bench.optuna_search multirun/optuna_rank_one     # Optuna's best against the job folders
    python -m rewrite.bench.sweep_table multirun/optuna_rank_one       # one row per trial, as for a grid

There is one search space per strategy, the grid experiment's `hydra.sweeper.params`
(`rewrite/conf/experiment/search_<family>_<strategy>.yaml`): hydra-optuna-sweeper reads each `a,b` list as a
categorical choice and a single value as a fixed setting, so nothing is converted or duplicated. The packaged
sweeper `hydra/sweeper=optuna_tpe` (rewrite/conf/hydra/sweeper/) maximises each job's `edit_score` (the value
`python -m rewrite` returns) with a fixed sampler seed; each trial is an ordinary job folder, so
`rewrite.bench.sweep_table` and the benchmark's `choose` read a study exactly as they read a grid.
See docs/optuna.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

SWEEPER = "optuna_tpe"  # rewrite/conf/hydra/sweeper/optuna_tpe.yaml
RESULTS = "optimization_results.yaml"  # what hydra-optuna-sweeper writes into the sweep folder at the end


def search_space(experiment_yaml: Path) -> dict[str, list[str]]:
    """The grid's settings per key (`hydra.sweeper.params`), as Hydra expands them: what Optuna chooses from.

    A key with one value is fixed in every trial. Ranges Optuna would sample continuously (`interval(...)`)
    are refused: such a space has no grid to compare with.
    """
    path = Path(experiment_yaml)
    if not path.is_file():
        raise FileNotFoundError(f"no experiment config {path}")
    params = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params")
    if not params:
        raise ValueError(f"{path}: no hydra.sweeper.params: not a search space")
    space: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()]):
        key = override.get_key_element()
        if not override.is_sweep_override():
            space[key] = [override.get_value_element_as_str()]
        elif override.is_choice_sweep() or override.is_range_sweep():
            space[key] = list(override.sweep_string_iterator())
        else:
            raise ValueError(f"{path}: {key} is a continuous range ({override.value()}); a grid needs a list")
    return space


def grid_size(experiment_yaml: Path) -> int:
    """Jobs the grid (basic sweeper) runs over this space: the job count an Optuna study is compared at."""
    return math.prod(len(values) for values in search_space(experiment_yaml).values())


def optuna_overrides(experiment_yaml: Path, trials: int, seed: int = 0) -> list[str]:
    """The command-line overrides that turn the experiment's grid multirun into an Optuna study of `trials` jobs.

    For `python -m rewrite -m +experiment=<name> ...`: the space is the experiment's own (checked here), so only
    the sweeper, the job count and the sampler seed are added. The experiment must not get extra `a,b` lists on
    the command line meant to be run in full (e.g. every copy/paste example of a setting): Optuna would make
    them one more choice per trial instead.
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    space = search_space(experiment_yaml)
    if all(len(values) == 1 for values in space.values()):
        raise ValueError(f"{experiment_yaml}: every setting is fixed; there is nothing to search")
    return [f"hydra/sweeper={SWEEPER}", f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.sampler.seed={seed}"]


def read_study(sweep_dir: Path) -> dict[str, object]:
    """Optuna's result for a finished study folder: `best_params` and `best_value` (the best edit_score)."""
    path = Path(sweep_dir) / RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: not an Optuna sweep, or the study did not finish")
    results = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(results, dict)
    if "best_value" not in results:
        raise ValueError(f"{path}: no best_value (a multi-objective study?)")
    return results


def main(argv: list[str] | None = None) -> None:
    """Print a finished study's best setting and check it against the job folders (the best complete job)."""
    from rewrite.bench.sweep_table import load_sweep

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", type=Path, help="the Optuna multirun folder")
    args = ap.parse_args(argv)
    try:
        study, sweep = read_study(args.sweep_dir), load_sweep(args.sweep_dir)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    scores = [s for r in sweep.rows if isinstance(s := r.get("edit_score"), int | float) and not math.isnan(s)]
    settings = {tuple(sorted((k, str(v)) for k, v in r.items() if k in study["best_params"])) for r in sweep.rows}
    print(f"{len(sweep.rows)} trial(s) complete, {len(settings)} distinct setting(s), {len(sweep.rows) - len(scores)} "
          f"without an edit_score; skipped folders: {len(sweep.skipped)}")
    print(f"best edit_score {study['best_value']:.4f} at {study['best_params']}")
    if scores and not math.isclose(max(scores), float(study["best_value"]), rel_tol=1e-9, abs_tol=1e-12):
        sys.exit(f"error: Optuna's best {study['best_value']} is not the best job's edit_score {max(scores)}")


if __name__ == "__main__":
    main()
