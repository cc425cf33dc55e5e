"""Build an edit from a config: the model, the request, the key statistics, the edit problem, the scorers.

The library side of a run, without Lightning or the Hydra entry point (`rewrite.cli` runs it); a benchmark
or a notebook builds an edit the same way (`build_edit(cfg)`).
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rewrite.core.problem import EditProblem, build_problem
from rewrite.core.request import EditRequest
from rewrite.core.site import make_site
from rewrite.core.stats import KeyStats, StatsCache, key_statistics
from rewrite.eval.ceiling import paste_ceiling
from rewrite.eval.evaluate import Evaluator
from rewrite.eval.scorer import Scorer
from rewrite.generators.base import GeneratorAdapter

CONF_DIR = str(Path(__file__).resolve().parent / "conf")  # package data: found from any folder, installed or not


def load_request(edit_cfg: DictConfig, heldout_offset: int = 0) -> EditRequest:
    """The edit request: inline in the `edit` config group, from the YAML/JSON file it names, or
    built by the factory its `_target_` names (e.g. the toy world's automatic requests).

    `heldout_offset` (the `split` config group) moves every held-out seed, so settings chosen on one
    split are reported on seeds they were not chosen on; factories take it as their own argument.
    """
    if edit_cfg.get("_target_"):
        request = instantiate(edit_cfg, heldout_offset=heldout_offset)
        if not isinstance(request, EditRequest):
            raise TypeError(f"{edit_cfg._target_} returned {type(request).__name__}, not an EditRequest")
        return request
    data = OmegaConf.to_container(edit_cfg, resolve=True)
    assert isinstance(data, dict)
    if data.get("file"):
        request = EditRequest.load(str(data["file"]))
    else:
        data.pop("file", None)
        request = EditRequest.from_dict(data)
    if heldout_offset:
        moved = tuple(dataclasses.replace(r, seed=r.seed + heldout_offset) for r in request.heldout)
        request = dataclasses.replace(request, heldout=moved)
    return request


def output_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.get("output_dir") or "outputs/run")


def build_scorers(cfg: DictConfig, adapter: GeneratorAdapter, request: EditRequest) -> list[Scorer]:
    """The configured extra scorers (`eval.scorers`: name -> `_target_` config; null entries are off).

    Built before the edit, so each can snapshot the unedited model; every factory gets the adapter,
    the request, the pixel tolerance and margin, and the split's held-out offset.
    """
    scorers = []
    for name, sc in (cfg.eval.get("scorers") or {}).items():
        if sc is None:
            continue
        scorer = instantiate(sc, adapter=adapter, request=request, tol=cfg.eval.tol, margin=cfg.eval.margin,
                             heldout_offset=cfg.split.heldout_offset)
        if not callable(getattr(scorer, "metrics", None)):
            raise TypeError(f"eval.scorers.{name}: {sc._target_} returned {type(scorer).__name__}, "
                            "which has no metrics() method")
        scorers.append(scorer)
    return scorers


_CEILINGS: OrderedDict[str, dict[str, float]] = OrderedDict()
CEILING_MEMO = 64  # ceilings kept per process: a multirun's jobs share them when only the strategy changes


def ceiling_metrics(cfg: DictConfig, adapter: GeneratorAdapter, problem: EditProblem,
                    weights_sha256: str | None = None) -> dict[str, float]:
    """The paste ceiling at the problem's layer (`rewrite.eval.ceiling`), scored as the run scores its edit:
    the evaluator, then the configured scorers. Needs the unedited model; {} when `eval.ceiling` is off.

    With `weights_sha256` (the unedited weights' hash) the result is kept for the process under a key of
    everything it depends on (weights, layer, request, scoring config, split), so the jobs of a multirun
    that differ only in the strategy compute it once; a changed weight or request is a new key.
    """
    if not cfg.eval.get("ceiling", True):
        return {}
    key = json.dumps([weights_sha256, problem.site.layer_name, cfg.generator.get("value_at"),
                      dataclasses.asdict(problem.request), OmegaConf.to_container(cfg.eval, resolve=True),
                      cfg.split.heldout_offset], sort_keys=True, default=str) if weights_sha256 else None
    if key is not None and key in _CEILINGS:
        _CEILINGS.move_to_end(key)
        return dict(_CEILINGS[key])

    def run_scorers(request: EditRequest) -> list[Scorer]:
        evaluator = Evaluator(dataclasses.replace(problem, request=request), None, cfg.eval.tol, cfg.eval.margin)
        return [evaluator, *build_scorers(cfg, adapter, request)]

    out = paste_ceiling(problem, run_scorers)
    if key is not None:
        _CEILINGS[key] = dict(out)
        while len(_CEILINGS) > CEILING_MEMO:
            _CEILINGS.popitem(last=False)
    return out


def resolved(node: DictConfig) -> dict[str, Any]:
    data = OmegaConf.to_container(node, resolve=True)
    assert isinstance(data, dict)
    return data


def build_edit(cfg: DictConfig) -> tuple[GeneratorAdapter, EditRequest, KeyStats, EditProblem]:
    """The model, the request, the key statistics and the edit problem a config describes (the run and
    `rewrite.bench.rescore` build them the same way)."""
    adapter: GeneratorAdapter = instantiate(cfg.generator.model)
    site = make_site(adapter, cfg.generator.layer, cfg.generator.get("value_at"))
    request = load_request(cfg.edit, cfg.split.heldout_offset)
    request.validate(adapter.resolution)
    st = cfg.stats
    stats = key_statistics(site, StatsCache(st.cache_dir) if st.cache_dir else None, st.num_samples,
                           st.batch_size, st.seed, st.dtype, progress=cfg.progress)
    return adapter, request, stats, build_problem(site, request, stats.moment)


