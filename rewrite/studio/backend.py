"""The studio's actions without any UI: pick a model and layer, look at samples, draw a request, see where
the update direction fires, run a strategy, keep or undo the edit.

Why a UI-free layer: every action is tested here without a browser, and the page (`rewrite.studio.app`) only
turns clicks into these calls. Nothing here re-implements the method: the model, statistics, problem,
strategies, scorers, paste ceiling, edit files and history come from the package (`rewrite.pipeline`,
`rewrite.core`, `rewrite.strategies`, `rewrite.eval`, `rewrite.runner.outputs`, `rewrite.editfile`), and
each run composes its config with Hydra and reads its request from the YAML file it exports, as
`python -m rewrite edit.file=…` does (`rewrite.studio.runs`).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

from rewrite.core.checks import check_run_config
from rewrite.core.problem import EditProblem, build_problem, select
from rewrite.core.request import EditRequest, EditRequestError, Region
from rewrite.core.site import SITE_TYPES, EditSite, make_site
from rewrite.core.stats import KeyStats, StatsCache, key_statistics
from rewrite.generators.base import GeneratorAdapter
from rewrite.pipeline import load_request
from rewrite.studio.configs import Configs
from rewrite.studio.security import StudioError, check_mask_path, save_mask

HELDOUT_START = 1_000_000  # held-out seeds (the paste box on each) when the request names none: never a gallery seed
HELDOUT_COUNT = 32


@dataclass
class Model:
    """The loaded generator at one layer, with its key statistics."""

    generator: str
    cfg: DictConfig  # composed for this generator and layer (its tuned strategy defaults resolve against it)
    adapter: GeneratorAdapter
    layers: list[str]
    site: EditSite
    stats: KeyStats
    key_grid: tuple[int, int]  # (h, w) of the layer's keys: where a region must cover a cell

    @property
    def layer(self) -> str:
        return self.site.layer_name

    @property
    def size(self) -> int:
        return self.adapter.resolution


@dataclass
class Draft:
    """The request being drawn. Regions are at image resolution, as in a request file."""

    name: str = "studio_edit"
    copy: Region | None = None
    paste: Region | None = None
    context: list[Region] = field(default_factory=list)
    heldout: list[Region] = field(default_factory=list)  # empty: the paste box on HELDOUT_COUNT unseen seeds
    rule: str | None = None  # toy world: the rule whose exact ideal scores the edit (the `toy_ideal` scorer)


def normalize_box(box: Sequence[float]) -> tuple[int, int, int, int]:
    """A box from two drag corners in any order, rounded to whole pixels: [x0, y0, x1, y1)."""
    if len(box) != 4:
        raise StudioError(f"a box needs four numbers [x0, y0, x1, y1], got {list(box)}")
    try:
        x0, y0, x1, y1 = (round(float(v)) for v in box)
    except (TypeError, ValueError):
        raise StudioError(f"a box needs four numbers [x0, y0, x1, y1], got {list(box)}") from None
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def placed_box(center: tuple[float, float], width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """A width×height box centred on a clicked point, moved inside the image (how the page places a paste)."""
    x0 = min(max(round(center[0] - width / 2), 0), size - width)
    y0 = min(max(round(center[1] - height / 2), 0), size - height)
    return x0, y0, x0 + width, y0 + height


def editable_layers(adapter: GeneratorAdapter, value_at: str | None) -> list[str]:
    """The layers an edit site can be built for with the config's `value_at` (as `generator.layer=` would be):
    the layers of a registered site type (e.g. StyleGAN2's modulated convs) when the model has any, else every
    Linear / Conv / ConvTranspose layer that works."""
    names = adapter.layer_names()
    registered = [n for n in names if any(c in SITE_TYPES for c in type(adapter.module(n)).__mro__)]
    out = []
    for name in registered or names:
        try:
            make_site(adapter, name, value_at)
        except (TypeError, KeyError, ValueError):
            continue
        out.append(name)
    return out


class Studio:
    """One studio session: a model, a draft request, runs and a history of kept edits, in one output folder.

    Every method takes the session lock, so the page's calls (and the background preparation) never use the
    model at the same time. Bad input raises `StudioError` (or the package's own `ValueError`s) with one line
    for the page.
    """

    def __init__(self, out_dir: str | Path, config_dir: str | Path | None = None, overrides: Sequence[str] = (),
                 gallery_size: int = 12) -> None:
        self.out = Path(out_dir).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.configs = Configs(config_dir, overrides)
        self.lock = threading.RLock()
        self.model: Model | None = None
        self.draft = Draft()
        self.gallery_size = gallery_size
        self._images: dict[int, Tensor] = {}
        self._keys: dict[int, Tensor] = {}
        self._problem: tuple[str, EditProblem] | None = None
        from rewrite.studio.runs import History, Runs  # runs builds on this module

        self.runs = Runs(self)
        self.history = History(self)

    # --- model --------------------------------------------------------------------------
    def generators(self) -> list[str]:
        return self.configs.options("generator")

    def presets(self) -> list[str]:
        """The request configs (`edit` group) a draft can start from: the toy rules, the face edits, yours."""
        return self.configs.options("edit")

    def load_model(self, generator: str, layer: str | None = None) -> Model:
        """Load a generator config (packaged or the user's) at `layer` (default: the config's), with the key
        statistics of the run config (cached on disk like a run's). The draft is kept where it still fits."""
        if generator not in self.generators():
            raise StudioError(f"no generator config {generator!r}; choose one of {self.generators()}")
        with self.lock:
            cfg = self.configs.compose([f"generator={generator}"])
            check_run_config(cfg)
            adapter: GeneratorAdapter = instantiate(cfg.generator.model)
            layers = editable_layers(adapter, cfg.generator.get("value_at"))
            self.model = None
            self.history.start(adapter, generator)
            self._images.clear()
            self.model = self._at_layer(generator, adapter, layers, layer or cfg.generator.layer)
            self.draft = dataclasses.replace(self.draft, copy=None, paste=None, context=[], heldout=[], rule=None)
            return self.model

    def set_layer(self, layer: str) -> Model:
        model = self.require_model()
        with self.lock:
            self.model = self._at_layer(model.generator, model.adapter, model.layers, layer)
            return self.model

    def _at_layer(self, generator: str, adapter: GeneratorAdapter, layers: list[str], layer: str) -> Model:
        if layer not in layers:
            raise StudioError(f"layer {layer!r} cannot be edited here; choose one of {layers}")
        cfg = self.configs.compose([f"generator={generator}", f"generator.layer={layer}"])
        site = make_site(adapter, layer, cfg.generator.get("value_at"))
        st = cfg.stats
        cache = StatsCache(st.cache_dir) if st.cache_dir else None
        stats = key_statistics(site, cache, st.num_samples, st.batch_size, st.seed, st.dtype, progress=False,
                               shards=st.get("shards"))
        grid = tuple(site.capture_keys(adapter.sample_z([0])).shape[-2:])
        self._keys.clear()
        self._problem = None
        self.runs.forget_prepared()
        return Model(generator, cfg, adapter, layers, site, stats, (int(grid[0]), int(grid[1])))

    def reload_statistics(self) -> None:
        """After the weights changed (a kept or undone edit): statistics, images and keys of the new weights."""
        model = self.require_model()
        self._images.clear()
        self.model = self._at_layer(model.generator, model.adapter, model.layers, model.layer)

    def require_model(self) -> Model:
        if self.model is None:
            raise StudioError("load a model first")
        return self.model

    # --- gallery ------------------------------------------------------------------------
    def images(self, seeds: Sequence[int]) -> list[Tensor]:
        """(3, S, S) images in [-1, 1] of the current weights (kept edits included), by seed."""
        model = self.require_model()
        seeds = [check_seed(s) for s in seeds]
        with self.lock:
            todo = [s for s in dict.fromkeys(seeds) if s not in self._images]
            if todo:
                self._images.update(zip(todo, model.adapter.generate(model.adapter.sample_z(todo)), strict=True))
            return [self._images[s] for s in seeds]

    def page(self, page: int) -> list[int]:
        """The seeds of gallery page `page` (0-based)."""
        if page < 0:
            raise StudioError(f"page must be ≥ 0, got {page}")
        return list(range(page * self.gallery_size, (page + 1) * self.gallery_size))

    # --- the request --------------------------------------------------------------------
    def set_copy(self, seed: int, box: Sequence[float]) -> Region:
        """The region to copy from sample `seed`; a paste of another size is dropped (it no longer fits)."""
        region = self._region(seed, box, "copy box")
        size = self.require_model().size
        with self.lock:
            paste = self.draft.paste
            if paste is not None and _size(paste, size) != _size(region, size):
                paste = None
            self.draft = dataclasses.replace(self.draft, copy=region, paste=paste)
        return region

    def set_paste(self, seed: int, box: Sequence[float]) -> Region:
        """Where the copy goes on sample `seed`: a box of the copy's size."""
        model = self.require_model()
        if self.draft.copy is None:
            raise StudioError("draw the copy box first: the paste takes its size")
        region = self._region(seed, box, "paste box")
        want, got = _size(self.draft.copy, model.size), _size(region, model.size)
        if want != got:
            raise StudioError(f"paste box is {got[0]}x{got[1]} px but the copy box is {want[0]}x{want[1]} px; "
                              "they must be the same size")
        with self.lock:
            self.draft = dataclasses.replace(self.draft, paste=region)
        return region

    def place_paste(self, seed: int, center: tuple[float, float]) -> Region:
        """The paste box of the copy's size centred on a clicked point (kept inside the image)."""
        model = self.require_model()
        if self.draft.copy is None:
            raise StudioError("draw the copy box first: the paste takes its size")
        w, h = _size(self.draft.copy, model.size)
        return self.set_paste(seed, placed_box(center, w, h, model.size))

    def add_context(self, seed: int, box: Sequence[float] | None = None, mask: bytes | None = None) -> Region:
        """A context region (a box, or an uploaded mask image) where the same rule should hold."""
        if (box is None) == (mask is None):
            raise StudioError("a context region needs a box or a mask")
        model = self.require_model()
        if mask is not None:
            region = Region(check_seed(seed), mask_path=str(save_mask(self.out, mask, model.size)))
            self._check_region(region, "context mask")
        else:
            assert box is not None
            region = self._region(seed, box, "context box")
        with self.lock:
            if region not in self.draft.context:
                self.draft = dataclasses.replace(self.draft, context=[*self.draft.context, region])
        return region

    def remove_context(self, index: int) -> None:
        with self.lock:
            if not 0 <= index < len(self.draft.context):
                raise StudioError(f"no context region {index}; there are {len(self.draft.context)}")
            self.draft = dataclasses.replace(self.draft, context=[r for i, r in enumerate(self.draft.context)
                                                                  if i != index])

    def clear_context(self) -> None:
        with self.lock:
            self.draft = dataclasses.replace(self.draft, context=[])

    def set_rule(self, rule: str | None) -> None:
        """Score the edit against the toy world's exact ideal of `rule` (None: against the paste goal).

        The held-out scenes become the rule's own (its request config's: scenes the rule acts on, where the
        ideal differs from the scene), since a scene the rule leaves alone has nothing to measure generality on.
        """
        rules = self.rules()
        if rule is not None and rule not in rules:
            raise StudioError(f"unknown toy rule {rule!r}; expected one of {rules}")
        heldout: list[Region] = []
        if rule is not None:
            model = self.require_model()
            cfg = self.configs.compose([f"generator={model.generator}", f"edit=toy_{rule}"])
            heldout = list(load_request(cfg.edit, cfg.split.heldout_offset).heldout)
        with self.lock:
            self.draft = dataclasses.replace(self.draft, rule=rule, heldout=heldout)

    def rules(self) -> list[str]:
        """The toy rules the packaged request configs name (`edit/toy_*.yaml`'s `rule`)."""
        return [name.removeprefix("toy_") for name in self.presets() if name.startswith("toy_")]

    def load_preset(self, name: str) -> EditRequest:
        """Start the draft from a request config: its copy, paste, context and held-out regions (and, for a
        toy rule, that rule's ideal scorer)."""
        model = self.require_model()
        if name not in self.presets():
            raise StudioError(f"no request config {name!r}; choose one of {self.presets()}")
        cfg = self.configs.compose([f"generator={model.generator}", f"edit={name}"])
        request = load_request(cfg.edit, cfg.split.heldout_offset)
        try:
            request.validate(model.size)
        except EditRequestError as e:
            raise StudioError(f"{name} does not fit {model.generator}: {e}") from None
        if request.is_erase:
            raise StudioError(f"{name} is an erase request; the studio draws copy/paste requests")
        with self.lock:
            self.draft = Draft(request.name, request.copy, request.paste, list(request.context),
                               list(request.heldout), cfg.edit.get("rule"))
        return request

    def import_request(self, text: str) -> EditRequest:
        """A request file's text (YAML or JSON) as the draft. Mask paths must name files inside the studio
        folder (relative to it): a request cannot make the server read other files."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise StudioError(f"the request is not valid YAML: {getattr(e, 'problem', None) or e}") from None
        if not isinstance(data, dict):
            raise StudioError("a request must be a mapping (name, copy, paste, context, heldout)")
        for key in ("copy", "paste", "context", "heldout", "contrast"):
            items = data.get(key)
            for r in items if isinstance(items, list) else [items]:
                if isinstance(r, dict) and "mask" in r:
                    check_mask_path(self.out, str(r["mask"]))
        request = EditRequest.from_dict(data, base_dir=self.out)
        request.validate(self.require_model().size)
        if request.is_erase:
            raise StudioError("the studio draws copy/paste requests; run erase requests with python -m rewrite")
        with self.lock:
            self.draft = Draft(request.name, request.copy, request.paste, list(request.context),
                               list(request.heldout), self.draft.rule)
        return request

    def request(self) -> EditRequest:
        """The draft as a checked request (held-out: the paste box on unseen seeds when none are set)."""
        model = self.require_model()
        d = self.draft
        if d.copy is None or d.paste is None:
            raise StudioError("draw a copy box and a paste box first")
        heldout = d.heldout or [Region(s, box=d.paste.bbox(model.size))
                                for s in range(HELDOUT_START, HELDOUT_START + HELDOUT_COUNT)]
        request = EditRequest(d.name, d.copy, d.paste, tuple(d.context), tuple(heldout))
        request.validate(model.size)
        return request

    def goal(self) -> Tensor:
        """The pasted target image (the edit's goal), from the problem every strategy works on."""
        return self.problem().target_image[0]

    def problem(self) -> EditProblem:
        """The edit problem of the draft at the current layer (cached until the draft or the weights change)."""
        model = self.require_model()
        with self.lock:
            request = self.request()
            key = json.dumps([request.to_dict(), model.layer, model.stats.spec.weights_sha256])
            if self._problem is None or self._problem[0] != key:
                self._problem = (key, build_problem(model.site, request, model.stats.moment))
            return self._problem[1]

    # --- where the update direction fires ----------------------------------------------
    def directions(self, strategy: str = "rank_one") -> Tensor:
        """D of the draft as `strategy` would compute it (its rank, key method and context setting from the
        composed config, tuned defaults included); strategies without directions show rank_one's."""
        model = self.require_model()
        cfg = self.configs.compose([f"generator={model.generator}", f"strategy={strategy}"]).strategy
        if "key_method" not in cfg:
            cfg = self.configs.compose([f"generator={model.generator}", "strategy=rank_one"]).strategy
        return self.problem().directions(int(cfg.get("rank", 1)), str(cfg.key_method), bool(cfg.use_context))

    def heatmap(self, seeds: Sequence[int], strategy: str = "rank_one") -> Tensor:
        """(N, h, w) ‖Dᵀk‖ per key position of each sample, over its mean on the paste region of the target
        (1 = fires as on the target), clipped to [0, 1]: where the edit will act."""
        model = self.require_model()
        seeds = [check_seed(s) for s in seeds]
        with self.lock:
            d = self.directions(strategy)
            p = self.problem()
            ref = model.site.project_keys(p.keys, d).norm(dim=1)[0]
            paste = select(p.request.paste.mask(model.size), *model.key_grid)
            scale = ref[paste].mean().clamp_min(1e-12)
            todo = [s for s in dict.fromkeys(seeds) if s not in self._keys]
            if todo:
                keys = model.site.capture_keys(model.adapter.sample_z(todo))
                self._keys.update(zip(todo, keys.split(1), strict=True))
            keys = torch.cat([self._keys[s] for s in seeds])
            return (model.site.project_keys(keys, d).norm(dim=1) / scale).clamp(0, 1).float()

    def add_top_matches(self, seeds: Sequence[int], count: int = 4, strategy: str = "rank_one") -> list[Region]:
        """Add context boxes (the paste box's size) where the direction fires most, on the `count` samples
        among `seeds` (not the target, not already context) with the strongest response."""
        model = self.require_model()
        if count < 1:
            raise StudioError(f"count must be ≥ 1, got {count}")
        with self.lock:
            paste = self.request().paste
            taken = {paste.seed, *(r.seed for r in self.draft.context)}
            seeds = [s for s in seeds if s not in taken]
            if not seeds:
                raise StudioError("every sample shown is already the target or a context region")
            heat = self.heatmap(seeds, strategy)
            best = heat.flatten(1).max(1)
            order = best.values.argsort(descending=True)[:count].tolist()
            w, h = _size(paste, model.size)
            hk, wk = model.key_grid
            added = []
            for i in order:
                cell = int(best.indices[i])
                cy, cx = (cell // wk + 0.5) * model.size / hk, (cell % wk + 0.5) * model.size / wk
                added.append(self.add_context(seeds[i], placed_box((cx, cy), w, h, model.size)))
            return added

    # --- checks -------------------------------------------------------------------------
    def _region(self, seed: int, box: Sequence[float], what: str) -> Region:
        region = Region(check_seed(seed), box=normalize_box(box))
        self._check_region(region, what)
        return region

    def _check_region(self, region: Region, what: str) -> None:
        """Inside the image, not empty, and covering a cell of the layer's key grid (else it marks nothing)."""
        model = self.require_model()
        try:
            region.validate(model.size, what)
            select(region.mask(model.size), *model.key_grid, what)
        except ValueError as e:  # EditRequestError, or select's "selects no feature cell"
            raise StudioError(str(e)) from None


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0 or seed >= 2**63:
        raise StudioError(f"a seed is a whole number ≥ 0, got {seed!r}")
    return seed


def _size(region: Region, size: int) -> tuple[int, int]:
    x0, y0, x1, y1 = region.bbox(size)
    return x1 - x0, y1 - y0

