"""Build an edit from a config: the model, the request, the key statistics, the edit problem, the scorers.

The library side of a run, without Lightning or the Hydra entry point (`rewrite.cli` runs it); a benchmark
or a notebook builds an edit the same way (`build_edit(cfg)`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rewrite.core.checks import check_run_config
from rewrite.core.problem import EditProblem, build_problem
from rewrite.core.request import EditRequest, EditRequestError
from rewrite.core.shared import key_of, store
from rewrite.core.site import make_site
from rewrite.core.stats import KeyStats, StatsCache, key_statistics
from rewrite.eval.ceiling import paste_ceiling
from rewrite.eval.evaluate import Evaluator
from rewrite.eval.fid_scorer import FidScorer
from rewrite.eval.scorer import Scorer
from rewrite.generators.base import GeneratorAdapter

CONF_DIR = str(Path(__file__).resolve().parent / "conf")  # package data: found from any folder, installed or not


def load_request(edit_cfg: DictConfig, heldout_offset: int = 0) -> EditRequest:
    """The edit request: inline in the `edit` config group, from the YAML/JSON file it names, or
    built by the factory its `_target_` names (e.g. the toy world's automatic requests).

    `heldout_offset` (the `split` config group) moves every held-out seed, so settings chosen on one
    split are reported on seeds they were not chosen on; factories take it as their own argument.
    A file holds the whole request: `edit.<field>=` overrides typed beside `edit.file=` are refused.
    """
    if edit_cfg.get("_target_"):
        request = instantiate(edit_cfg, heldout_offset=heldout_offset)
        if not isinstance(request, EditRequest):
            raise TypeError(f"{edit_cfg._target_} returned {type(request).__name__}, not an EditRequest")
        return request
    data = OmegaConf.to_container(edit_cfg, resolve=True)
    assert isinstance(data, dict)
    if data.get("file"):
        beside = _edit_overrides_beside_file()
        if beside:
            raise EditRequestError(f"edit.file={data['file']} is the whole request; {' '.join(beside)} beside it "
                                   "would be ignored: put the change in the file, or drop edit.file")
        request = EditRequest.load(str(data["file"]))
    else:
        data.pop("file", None)
        request = EditRequest.from_dict(data)
    if heldout_offset:
        moved = tuple(dataclasses.replace(r, seed=r.seed + heldout_offset) for r in request.heldout)
        request = dataclasses.replace(request, heldout=moved)
    return request


def _edit_overrides_beside_file() -> list[str]:
    """The command line's `edit.<field>=` overrides other than `edit.file=` (none outside a Hydra run: a
    composed config does not say which of its values were typed)."""
    if not HydraConfig.initialized():
        return []
    typed = [o for o in HydraConfig.get().overrides.task if o.lstrip("+~").startswith("edit.")]
    return [o for o in typed if o.lstrip("+~").split("=", 1)[0] != "edit.file"]


def output_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.get("output_dir") or "outputs/run")


def build_scorers(cfg: DictConfig, adapter: GeneratorAdapter, request: EditRequest,
                  fid: bool = True) -> list[Scorer]:
    """The configured extra scorers (`eval.scorers`: name -> `_target_` config; null entries are off), then
    FID / KID when `eval.fid.samples` > 0 (and `fid`: the paste ceiling leaves it out, its images differ from
    the unedited model's only at the request's own seeds).

    Built before the edit, so each can snapshot the unedited model; every factory gets the adapter,
    the request, the pixel tolerance and margin, and the split's held-out offset.
    """
    scorers: list[Scorer] = []
    for name, sc in (cfg.eval.get("scorers") or {}).items():
        if sc is None:
            continue
        # the objects are passed to the factory itself: Hydra would first copy the request (a dataclass with
        # hundreds of regions) into an OmegaConf node, slow for every job of a sweep
        factory = instantiate(sc, _partial_=True)
        scorer = factory(adapter=adapter, request=request, tol=cfg.eval.tol, margin=cfg.eval.margin,
                         heldout_offset=cfg.split.heldout_offset)
        if not callable(getattr(scorer, "metrics", None)):
            raise TypeError(f"eval.scorers.{name}: {sc._target_} returned {type(scorer).__name__}, "
                            "which has no metrics() method")
        scorers.append(scorer)
    fc = cfg.eval.get("fid")  # absent in the configs of runs from before FID
    if fid and fc is not None and fc.samples > 0:
        generator = json.dumps(OmegaConf.to_container(cfg.generator.model, resolve=True), sort_keys=True, default=str)
        scorers.append(FidScorer(adapter, fc.samples, fc.seed, fc.batch_size, fc.kid_subsets, fc.kid_subset_size,
                                 request=request, model_key=generator, progress=bool(cfg.get("progress")),
                                 cache_dir=cfg.stats.get("cache_dir")))
    return scorers


CEILINGS = store("ceilings", 64)  # a multirun's jobs share them when only the strategy changes
PROBLEMS = store("problems", 16)


def problem_key(stats: KeyStats, value_at: str | None, request: EditRequest) -> str:
    """Everything an edit problem depends on: the statistics' spec (model, weights' sha256, layer, samples,
    seed, dtype), where the value is read, and the whole request."""
    return key_of(dataclasses.asdict(stats.spec), value_at, request.to_dict())


def ceiling_metrics(cfg: DictConfig, adapter: GeneratorAdapter, problem: EditProblem,
                    weights_sha256: str | None = None) -> dict[str, float]:
    """The paste ceiling at the problem's layer (`rewrite.eval.ceiling`), scored as the run scores its edit:
    the evaluator, then the configured scorers. Needs the unedited model; {} when `eval.ceiling` is off.

    With `weights_sha256` (the unedited weights' hash) the result is shared in the process under a key of
    everything it depends on (weights, layer, request, scoring config, split), so the jobs of a multirun
    that differ only in the strategy compute it once; a changed weight or request is a new key.
    """
    if not cfg.eval.get("ceiling", True):
        return {}

    def run_scorers(request: EditRequest) -> list[Scorer]:
        evaluator = Evaluator(dataclasses.replace(problem, request=request), None, cfg.eval.tol, cfg.eval.margin)
        return [evaluator, *build_scorers(cfg, adapter, request, fid=False)]

    if weights_sha256 is None:
        return paste_ceiling(problem, run_scorers)
    key = key_of(weights_sha256, problem.site.layer_name, cfg.generator.get("value_at"),
                 dataclasses.asdict(problem.request),
                 {k: v for k, v in resolved(cfg.eval).items() if k != "fid"},  # the ceiling scores no FID
                 cfg.split.heldout_offset)
    return dict(CEILINGS.get(key, lambda: paste_ceiling(problem, run_scorers)))


def resolved(node: DictConfig) -> dict[str, Any]:
    data = OmegaConf.to_container(node, resolve=True)
    assert isinstance(data, dict)
    return data


def build_edit(cfg: DictConfig) -> tuple[GeneratorAdapter, EditRequest, KeyStats, EditProblem]:
    """The model, the request, the key statistics and the edit problem a config describes (the run and
    `rewrite.bench.rescore` build them the same way). The config's numbers are checked first, before any work.
    The problem is shared with earlier jobs of the process that had the same statistics, layer and request.
    A shard run (`stats.shard=I`) saves its statistics shard and raises `rewrite.core.shards.ShardRunStop`."""
    check_run_config(cfg)
    adapter: GeneratorAdapter = instantiate(cfg.generator.model)
    site = make_site(adapter, cfg.generator.layer, cfg.generator.get("value_at"))
    request = load_request(cfg.edit, cfg.split.heldout_offset)
    request.validate(adapter.resolution)
    st = cfg.stats
    cache = StatsCache(st.cache_dir) if st.cache_dir else None
    if st.get("shard") is not None:  # a shard run: save shard I of K of the statistic, then stop (no edit)
        from rewrite.core.shards import ShardRunStop, save_key_shard

        assert cache is not None  # check_run_config: stats.shards needs stats.cache_dir
        raise ShardRunStop(save_key_shard(site, cache, st.num_samples, st.batch_size, st.seed, st.dtype, st.shards,
                                          st.shard, progress=cfg.progress))
    stats = key_statistics(site, cache, st.num_samples, st.batch_size, st.seed, st.dtype, progress=cfg.progress,
                           shards=st.get("shards"))
    problem = PROBLEMS.get(problem_key(stats, cfg.generator.get("value_at"), request),
                           lambda: build_problem(site, request, stats.moment))
    # a shared problem was built on an earlier job's adapter, whose weights that job edited: this job's site
    return adapter, request, stats, problem if problem.site is site else dataclasses.replace(problem, site=site)


