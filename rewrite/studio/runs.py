"""Running a strategy from the studio, and the history of kept edits.

A run is a CLI run without Lightning: its config is composed from the same overrides, its request is read
from the `request.yaml` it writes (whose first line is the command that reproduces it), and it leaves the
run folder's files made by the package's own writers: `edit.safetensors` (`rewrite.runner.outputs.save_edit`),
`metrics.json` (`write_metrics`), `grid.png` (`rewrite.eval.grid`). Metrics come from the evaluator and the
configured scorers (`rewrite.pipeline`), as in a run; the paste ceiling is computed apart (`Runs.ceiling`),
after the result is on the page.

What does not depend on the strategy (the edit problem, the scorers' snapshots of the unedited model) is
prepared once per request, layer and weights (`prepare`, which the page starts as soon as the request is
complete), so a click on *run* costs the fit and the scoring only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
import yaml
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rewrite.core.files import atomic_write, file_sha256
from rewrite.core.problem import EditProblem, build_problem
from rewrite.core.request import EditRequest
from rewrite.editfile.cli import Stack
from rewrite.eval.evaluate import Evaluator
from rewrite.eval.grid import before_after_grid
from rewrite.eval.scorer import Scorer
from rewrite.generators.base import GeneratorAdapter
from rewrite.pipeline import build_scorers, ceiling_metrics, load_request, resolved
from rewrite.runner.callbacks import write_metrics
from rewrite.runner.outputs import EDIT_FILE, save_edit
from rewrite.strategies.base import EditResult, Strategy
from rewrite.studio.security import StudioError

if TYPE_CHECKING:
    from rewrite.studio.backend import Studio

REQUEST_FILE = "request.yaml"
GRID_ROWS = 8  # held-out rows of the grid, as a run's grid.png
Progress = Callable[[float, str], None]


@dataclass
class Prepared:
    """Everything a run needs that the strategy does not change."""

    key: str
    cfg: DictConfig  # scoring settings (eval, split) as composed for the request
    problem: EditProblem
    evaluator: Evaluator
    scorers: list[Scorer]


@dataclass
class RunOutcome:
    run_id: str
    folder: Path
    strategy: str
    metrics: dict[str, Any]
    seconds: float  # from the call to the finished files
    command: str  # reproduces the edit through the CLI

    @property
    def edit_file(self) -> Path:
        return self.folder / EDIT_FILE

    @property
    def request_file(self) -> Path:
        return self.folder / REQUEST_FILE

    @property
    def grid(self) -> Path:
        return self.folder / "grid.png"


def rule_overrides(rule: str | None) -> list[str]:
    """The toy world's exact-ideal scorer for `rule`, as command-line overrides (none without a rule)."""
    return [] if rule is None else ["+scorer@eval.scorers.toy_ideal=toy_ideal", f"eval.scorers.toy_ideal.rule={rule}"]


def setting_overrides(settings: dict[str, Any]) -> list[str]:
    """`strategy.<key>=<value>` for the settings typed on the page (JSON values: Hydra reads them back)."""
    return [f"strategy.{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in settings.items()]


class Runs:
    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.prepared: Prepared | None = None
        self.outcomes: list[RunOutcome] = []

    def forget_prepared(self) -> None:
        self.prepared = None

    def overrides(self, strategy: str, settings: dict[str, Any] | None = None) -> list[str]:
        model = self.studio.require_model()
        if strategy not in self.studio.configs.options("strategy"):
            raise StudioError(f"no strategy {strategy!r}; choose one of {self.studio.configs.options('strategy')}")
        return [f"generator={model.generator}", f"generator.layer={model.layer}", f"strategy={strategy}",
                *setting_overrides(settings or {}), *rule_overrides(self.studio.draft.rule)]

    def strategy_settings(self, strategy: str) -> dict[str, Any]:
        """The strategy's settings as a run would use them (tuned defaults of the model resolved)."""
        cfg = self.studio.configs.compose(self.overrides(strategy)).strategy
        return {k: v for k, v in resolved(cfg).items() if k != "_target_"}

    def write_request(self, folder: Path, request: EditRequest, command: str) -> Path:
        """`request.yaml`: the request (mask paths relative to the file) under a comment with its command."""
        data = request.to_dict()
        for key in ("copy", "paste"):
            _relative_mask(data[key], folder)
        for key in ("context", "heldout"):
            for r in data[key]:
                _relative_mask(r, folder)
        text = f"# reproduce: {command}\n" + yaml.safe_dump(data, sort_keys=False)
        return atomic_write(folder / REQUEST_FILE, lambda tmp: tmp.write_text(text))

    def new_folder(self, strategy: str) -> tuple[str, Path]:
        runs = self.studio.out / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        n = 1 + max((int(p.name.split("_")[0]) for p in runs.iterdir() if p.name.split("_")[0].isdigit()), default=0)
        run_id = f"{n:03d}_{strategy}"
        (runs / run_id).mkdir()
        return run_id, runs / run_id

    def compose(self, strategy: str, settings: dict[str, Any] | None,
                folder: Path) -> tuple[DictConfig, str, list[str]]:
        """The run's config (with `edit.file=<folder>/request.yaml`, written here), its command and overrides."""
        base = self.overrides(strategy, settings)
        overrides = [*base, f"edit.file={folder / REQUEST_FILE}"]
        command = self.studio.configs.command(overrides)
        self.write_request(folder, self.studio.request(), command)
        cfg = self.studio.configs.compose(base)  # kept per override list: setting edit.file = the override's result
        OmegaConf.update(cfg, "edit.file", str(folder / REQUEST_FILE), force_add=True)
        return cfg, command, [*self.studio.configs.overrides, *overrides]

    def prepare(self, cfg: DictConfig | None = None) -> Prepared:
        """The problem and the scorers' snapshots of the unedited model for the draft (reused while the request,
        layer, weights and scoring settings stay the same)."""
        studio = self.studio
        with studio.lock:
            model = studio.require_model()
            if cfg is None:
                cfg, _, _ = self.compose("rank_one", None, self.scratch())
            request = load_request(cfg.edit, cfg.split.heldout_offset)
            request.validate(model.size)
            sha = model.stats.spec.weights_sha256
            key = json.dumps([request.to_dict(), model.layer, sha, resolved(cfg.eval), cfg.split.heldout_offset],
                             sort_keys=True, default=str)
            if self.prepared is not None and self.prepared.key == key:
                return self.prepared
            problem = build_problem(model.site, request, model.stats.moment)
            scorers = build_scorers(cfg, model.adapter, request)
            evaluator = Evaluator(problem, None, cfg.eval.tol, cfg.eval.margin)
            self.prepared = Prepared(key, cfg, problem, evaluator, scorers)
            return self.prepared

    def ceiling(self) -> dict[str, float]:
        """The paste ceiling of the draft at the layer (`rewrite.pipeline.ceiling_metrics`, kept per process).

        Context regions choose directions and the ceiling has none, so they are left out of the request here,
        as `rewrite.bench.ceiling` does: adding context does not cost a new ceiling (the numbers are the same)."""
        with self.studio.lock:
            prep = self.prepare()
            model = self.studio.require_model()
            problem = dataclasses.replace(prep.problem, request=dataclasses.replace(prep.problem.request, context=()))
            return ceiling_metrics(prep.cfg, model.adapter, problem, model.stats.spec.weights_sha256)

    def scratch(self) -> Path:
        folder = self.studio.out / "prepare"
        folder.mkdir(exist_ok=True)
        return folder

    def run(self, strategy: str = "rank_one", settings: dict[str, Any] | None = None,
            progress: Progress | None = None) -> RunOutcome:
        """Fit `strategy` to the draft, score it on the held-out samples and write the run folder."""
        studio = self.studio
        t0 = time.perf_counter()
        say = progress or (lambda _f, _m: None)
        with studio.lock:
            model = studio.require_model()
            studio.request()  # a clear message before a folder is made
            run_id, folder = self.new_folder(strategy)
            cfg, command, overrides = self.compose(strategy, settings, folder)
            try:
                fit: Strategy = instantiate(cfg.strategy)
            except InstantiationException as e:  # a bad setting: the strategy's own message, not Hydra's wrapper
                raise StudioError(str(e.__cause__ or e)) from None
            say(0.05, "preparing")
            prep = self.prepare(cfg)
            pl.seed_everything(cfg.seed, workers=True, verbose=False)
            adapter = model.adapter
            keep = adapter.state_copy()  # strategies that train weights in place leave them as they were
            try:
                start = time.perf_counter()
                result = fit.run(prep.problem, on_step=lambda i: say(0.1 + 0.6 * (i + 1) / fit.num_steps,
                                                                     f"{strategy}: step {i + 1} of {fit.num_steps}"))
                edit_seconds = time.perf_counter() - start
                adapter.load_weights(keep)
                say(0.75, "scoring")
                metrics = self._score(cfg, prep, result, strategy, edit_seconds, folder)
                save_edit(folder, adapter, result, model.stats.spec.weights_sha256,
                          {"name": strategy, **resolved(cfg.strategy)}, prep.problem.request)
                write_metrics(folder, metrics, overrides)
            finally:
                adapter.load_weights(keep)
            outcome = RunOutcome(run_id, folder, strategy, metrics, time.perf_counter() - t0, command)
            self.outcomes.append(outcome)
            say(1.0, "done")
            return outcome

    @torch.no_grad()
    def _score(self, cfg: DictConfig, prep: Prepared, result: EditResult, strategy: str, edit_seconds: float,
               folder: Path) -> dict[str, Any]:
        """The run's metrics (evaluator, scorers, ceiling, the run's extras) and grid.png, with the edit applied."""
        model = self.studio.require_model()
        adapter, request = model.adapter, prep.problem.request
        regions = [request.paste, *list(request.heldout)[:GRID_ROWS]]
        z = adapter.sample_z([r.seed for r in regions])
        *before, source = self.studio.images([*(r.seed for r in regions), request.source.seed])  # kept per seed
        with adapter.edited(result.weights):
            m: dict[str, Any] = dict(prep.evaluator.metrics(result))
            for scorer in prep.scorers:
                m.update(scorer.metrics())
            after = adapter.generate(z)
        m["edit_time_s"] = edit_seconds
        m.update({"stats_time_s": model.stats.seconds, "stats_cached": int(model.stats.cached), "strategy": strategy,
                  "split": cfg.split.name, "torch_threads": torch.get_num_threads()})
        ideal = next((sc.ideal for sc in prep.scorers if callable(getattr(sc, "ideal", None))), None)
        rows = [(source if i == 0 else None, request.copy if i == 0 else None, b, a, r)
                for i, (b, a, r) in enumerate(zip(before, after, regions, strict=True))]
        before_after_grid(rows, prep.problem.size, folder / "grid.png", ideal=ideal(z) if ideal else None)
        return m

    def find(self, run_id: str) -> RunOutcome:
        for o in self.outcomes:
            if o.run_id == run_id:
                return o
        raise StudioError(f"no run {run_id!r} in this session")


def _relative_mask(region: dict[str, Any] | None, folder: Path) -> None:
    if region is not None and region.get("mask"):
        region["mask"] = os.path.relpath(Path(region["mask"]).resolve(), folder.resolve())


class History:
    """The kept edits of this model, as a `rewrite-edit` stack (`history/stack.json`) on the unedited weights
    (`history/base.safetensors`): keeping a run's edit applies it on top, undo rebuilds the weights from the
    base and the remaining edits (`rewrite.editfile.cli.Stack`), bit for bit."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.stack: Stack | None = None
        self.folder = studio.out / "history"

    def start(self, adapter: GeneratorAdapter, generator: str) -> None:
        """A new model: its weights become the base of an empty stack."""
        folder = self.folder / generator
        folder.mkdir(parents=True, exist_ok=True)
        base = folder / "base.safetensors"
        state = {k: v.detach().cpu().clone().contiguous() for k, v in adapter.model.state_dict().items()}
        from safetensors.torch import save_file

        atomic_write(base, lambda tmp: save_file(state, str(tmp)))
        self.stack = Stack(base, file_sha256(base), None, [])
        self.stack_file = folder / "stack.json"
        self.stack.save(self.stack_file)

    @property
    def edits(self) -> list[Path]:
        return [p for p, _ in self.stack.edits] if self.stack else []

    def keep(self, run_id: str) -> list[Path]:
        """Apply a run's edit to the model and push it on the stack (refused unless made on these weights)."""
        studio = self.studio
        outcome = studio.runs.find(run_id)
        with studio.lock:
            assert self.stack is not None
            stack = Stack(self.stack.base, self.stack.base_sha256, None,
                          [*self.stack.edits, (outcome.edit_file, file_sha256(outcome.edit_file))])
            self._load(stack)
            return self.edits

    def undo(self) -> list[Path]:
        studio = self.studio
        with studio.lock:
            if self.stack is None or not self.stack.edits:
                raise StudioError("no kept edit to undo")
            self._load(Stack(self.stack.base, self.stack.base_sha256, None, self.stack.edits[:-1]))
            return self.edits

    def _load(self, stack: Stack) -> None:
        try:
            _, state = stack.weights()  # every edit checked against the weights below it
        except ValueError as e:
            raise StudioError(str(e)) from None
        model = self.studio.require_model()
        model.adapter.load_weights(state)
        self.stack = stack
        stack.save(self.stack_file)
        self.studio.reload_statistics()


