"""The studio's page (NiceGUI): every control calls one action of `rewrite.studio.backend.Studio`.

Why NiceGUI: the page is a live view of server-side state (a loaded model, a draft request, runs), which
NiceGUI keeps in Python without a REST layer, and its `interactive_image` gives image-pixel coordinates of
mouse presses and releases with an SVG overlay, so boxes are drawn by dragging on the samples themselves.

Long actions run in a worker thread (`nicegui.run.io_bound`) so the page stays responsive and shows progress;
an error of any kind becomes one line on the page (`notify`), never a traceback, and the server goes on.
Files are served only from the studio's output folder (`/files/…`, see `rewrite.studio.security`).
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.errors import InstantiationException
from nicegui import app, background_tasks, run, ui
from nicegui.events import MouseEventArguments, UploadEventArguments

from rewrite.studio.backend import HELDOUT_COUNT, Studio
from rewrite.studio.images import data_url, heat_overlay, png
from rewrite.studio.runs import RunOutcome
from rewrite.studio.security import MAX_MASK_BYTES, StudioError, inside

log = logging.getLogger(__name__)
T = TypeVar("T")
TILE_PX = 168  # displayed size of a sample (the PNG is the generator's own size, scaled without smoothing)
COLORS = {"copy": "#ff3b30", "paste": "#ffd60a", "context": "#30d5ff"}
HEADLINE = ("efficacy", "generality", "specificity", "edit_score")


def mount_files(studio: Studio) -> None:
    """Serve the studio's output folder, and nothing else of the disk, at /files."""

    @app.get("/files/{path:path}")
    def files(path: str) -> Any:
        from fastapi import HTTPException
        from fastapi.responses import FileResponse

        try:
            target = inside(studio.out, path)
        except StudioError:
            raise HTTPException(status_code=404) from None
        if not target.is_file():
            raise HTTPException(status_code=404)
        return FileResponse(target, filename=target.name)


def file_url(studio: Studio, path: Path) -> str:
    return "/files/" + path.resolve().relative_to(studio.out).as_posix()


class Page:
    """One browser tab's view of the shared studio."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.page_no = 0
        self.drag: dict[int, tuple[float, float]] = {}
        self.tiles: dict[int, Any] = {}
        self.heat = False
        self.busy = False
        self.progress = (0.0, "")
        self.outcome: RunOutcome | None = None
        self.build()

    # --- plumbing -----------------------------------------------------------------------
    async def act(self, fn: Callable[..., T], *args: Any, quiet: bool = False) -> T | None:
        """Run a backend action in a worker thread; its error is one line on the page."""
        try:
            try:
                return await run.io_bound(fn, *args)
            except InstantiationException as e:  # a config's object refused its settings: its own message
                raise e.__cause__ if isinstance(e.__cause__, Exception) else RuntimeError(str(e)) from None
        except (StudioError, ValueError, KeyError, TypeError, RuntimeError, FileNotFoundError) as e:
            if not quiet:
                ui.notify(" ".join(str(e).strip("'\"").split()), type="negative", multi_line=True,
                          classes="studio-error")
            return None
        except Exception as e:  # an unexpected bug: logged with its trace on the server, one line on the page
            log.exception("studio action failed")
            if not quiet:
                ui.notify(f"{type(e).__name__}: {e}", type="negative", classes="studio-error")
            return None

    def later(self, make: Callable[[], Awaitable[Any]]) -> None:
        background_tasks.create(make())

    # --- layout -------------------------------------------------------------------------
    def build(self) -> None:
        s = self.studio
        ui.add_css(f".pixelated, .pixelated img {{ image-rendering: pixelated; }} .tile {{ width: {TILE_PX}px; }} "
                   "table.scores td, table.scores th { padding: 1px 10px 1px 0; text-align: left; }")
        with ui.header().classes("items-center"):
            ui.label("rewrite studio").classes("text-h6")
            ui.label("copy a part of one sample, paste it into another, and teach the model the rule")
        with ui.row().classes("w-full no-wrap items-start"):
            with ui.column().classes("w-1/4"):
                self.build_model_panel(s)
                self.build_request_panel()
            with ui.column().classes("w-2/4"):
                self.build_gallery()
            with ui.column().classes("w-1/4"):
                self.build_run_panel(s)
        self.timer = ui.timer(0.25, self.show_progress)

    def build_model_panel(self, s: Studio) -> None:
        with ui.card().classes("w-full"):
            ui.label("Model").classes("text-subtitle1")
            gens = s.generators()
            self.generator = ui.select(gens, value="toy_stylegan2" if "toy_stylegan2" in gens else gens[0],
                                       label="generator config").classes("w-full").props("data-testid=generator")
            ui.button("Load model", on_click=self.load_model).props("data-testid=load")
            self.layer = ui.select([], label="layer", on_change=self.change_layer).classes("w-full")
            self.model_info = ui.label("no model loaded").classes("text-caption").props("data-testid=model-info")
            ui.button("Paste ceiling per layer", on_click=self.layer_ceilings).props("flat dense")
            self.ceilings = ui.label("").classes("text-caption whitespace-pre font-mono")
            ui.separator()
            self.preset = ui.select(s.presets(), label="start from a request config").classes("w-full")
            ui.button("Use request", on_click=self.load_preset).props("flat dense")
            self.rule = ui.select(["(none)", *s.rules()], value="(none)", label="toy world ground truth (rule)",
                                  on_change=self.change_rule).classes("w-full")

    def build_request_panel(self) -> None:
        with ui.card().classes("w-full"):
            ui.label("Request").classes("text-subtitle1")
            self.mode = ui.toggle({"copy": "copy", "paste": "paste", "context": "context"}, value="copy") \
                .props("data-testid=mode")
            ui.label("drag a box on a sample (paste: click where the copy goes)").classes("text-caption")
            self.request_info = ui.label("").classes("text-caption whitespace-pre").props("data-testid=request-info")
            ui.label("goal (the pasted target)").classes("text-caption")
            self.goal = ui.image("").classes("pixelated").style(f"width: {TILE_PX}px").props("data-testid=goal")
            self.context_list = ui.column().classes("w-full gap-0")
            with ui.row():
                ui.button("Add top matches", on_click=self.top_matches).props("dense data-testid=top-matches")
                ui.button("Clear context", on_click=self.clear_context).props("flat dense")
            with ui.row().classes("items-center"):
                self.mask_seed = ui.number("mask seed", value=0, min=0, format="%d").classes("w-24")
                ui.upload(label="context mask (PNG)", auto_upload=True, max_file_size=MAX_MASK_BYTES,
                          on_upload=self.upload_mask).props("accept=.png,.bmp,.gif dense").classes("w-40")

    def build_gallery(self) -> None:
        with ui.card().classes("w-full"):
            with ui.row().classes("items-center"):
                ui.label("Samples").classes("text-subtitle1")
                ui.button("◀", on_click=lambda: self.goto(self.page_no - 1)).props("dense flat")
                self.page_label = ui.label("")
                ui.button("▶", on_click=lambda: self.goto(self.page_no + 1)).props("dense flat")
                self.seed_box = ui.number("seed", value=0, min=0, format="%d").classes("w-24") \
                    .props("data-testid=seed")
                ui.button("Go", on_click=self.jump).props("dense flat data-testid=go")
                self.heat_switch = ui.switch("where the update direction fires (dᵀk)", on_change=self.toggle_heat) \
                    .props("data-testid=heat")
            self.gallery = ui.grid(columns=4).classes("gap-2")

    def build_run_panel(self, s: Studio) -> None:
        with ui.card().classes("w-full"):
            ui.label("Run").classes("text-subtitle1")
            self.strategy = ui.select(s.configs.options("strategy"), value="rank_one", label="strategy",
                                      on_change=self.show_settings).classes("w-full")
            self.settings_box = ui.column().classes("w-full gap-0")
            self.settings: dict[str, Any] = {}
            self.run_button = ui.button("Run", on_click=self.run_edit).props("data-testid=run")
            self.bar = ui.linear_progress(value=0, show_value=False).props("instant-feedback")
            self.bar_label = ui.label("").classes("text-caption").props("data-testid=progress")
        with ui.card().classes("w-full"):
            ui.label("Result").classes("text-subtitle1")
            self.scores = ui.html("", sanitize=False).props("data-testid=scores")
            self.ceiling_label = ui.label("").classes("text-caption").props("data-testid=ceiling")
            self.downloads = ui.row()
            self.command = ui.label("").classes("text-caption font-mono break-all").props("data-testid=command")
            with ui.row():
                ui.button("Keep (stack)", on_click=self.keep).props("dense data-testid=keep")
                ui.button("Undo last kept", on_click=self.undo).props("flat dense data-testid=undo")
            self.history_label = ui.label("history: no kept edit").classes("text-caption") \
                .props("data-testid=history")
        with ui.card().classes("w-full"):
            ui.label("before / after / difference on held-out samples").classes("text-caption")
            self.grid_image = ui.image("").classes("w-full").props("data-testid=grid")

    # --- model --------------------------------------------------------------------------
    async def load_model(self) -> None:
        self.model_info.text = f"loading {self.generator.value} (statistics may take a while the first time)…"
        model = await self.act(self.studio.load_model, self.generator.value)
        if model is None:
            self.model_info.text = "no model loaded"
            return
        self.layer.set_options(model.layers, value=model.layer)
        self.rule.value = "(none)"
        self.show_model()
        await self.show_settings()
        await self.refresh()

    def show_model(self) -> None:
        m = self.studio.model
        if m is None:
            return
        self.model_info.text = (f"{m.generator} at {m.layer}: {m.size}x{m.size} images, keys {m.key_grid[0]}x"
                                f"{m.key_grid[1]}, statistics from {m.stats.spec.num_samples} samples")

    async def change_layer(self) -> None:
        m = self.studio.model
        if m is None or self.layer.value in (None, m.layer):
            return
        if await self.act(self.studio.set_layer, self.layer.value) is not None:
            self.show_model()
            await self.refresh()

    async def layer_ceilings(self) -> None:
        from rewrite.bench.ceiling import format_table, layer_ceilings

        m = self.studio.model
        if m is None:
            ui.notify("load a model first", type="negative", classes="studio-error")
            return

        def table() -> str:
            with self.studio.lock:
                prep = self.studio.runs.prepare()
                return format_table(layer_ceilings(prep.cfg, m.layers))

        self.ceilings.text = "computing the paste ceiling at every layer…"
        self.ceilings.text = await self.act(table) or ""

    async def load_preset(self) -> None:
        if self.preset.value and await self.act(self.studio.load_preset, self.preset.value) is not None:
            self.rule.value = self.studio.draft.rule or "(none)"
            await self.refresh()

    async def change_rule(self) -> None:
        rule = None if self.rule.value == "(none)" else self.rule.value
        if self.studio.model is not None and self.studio.draft.rule != rule:
            await self.act(self.studio.set_rule, rule)
            self.show_request()

    # --- gallery ------------------------------------------------------------------------
    async def goto(self, page_no: int) -> None:
        if page_no >= 0:
            self.page_no = page_no
            await self.refresh()

    async def jump(self) -> None:
        seed = int(self.seed_box.value or 0)
        await self.goto(max(seed, 0) // self.studio.gallery_size)

    async def toggle_heat(self) -> None:
        self.heat = bool(self.heat_switch.value)
        await self.refresh()

    def tile_content(self, seed: int) -> str:
        """SVG boxes of the draft on sample `seed` (viewBox = image pixels)."""
        d = self.studio.draft
        marks = [("copy", d.copy), ("paste", d.paste)] + [("context", r) for r in d.context]
        out = []
        for kind, r in marks:
            if r is None or r.seed != seed or r.box is None:
                continue
            x0, y0, x1, y1 = r.box
            out.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" '
                       f'stroke="{COLORS[kind]}" stroke-width="0.8" />')
        return "".join(out)

    async def refresh(self) -> None:
        """Redraw the gallery (with heat maps when on), the request and the goal."""
        s = self.studio
        if s.model is None:
            return
        seeds = s.page(self.page_no)
        self.page_label.text = f"seeds {seeds[0]}–{seeds[-1]}"
        images = await self.act(s.images, seeds)
        if images is None:
            return
        heat = None
        if self.heat:
            heat = await self.act(s.heatmap, seeds, self.strategy.value, quiet=s.draft.paste is None)
            if heat is None and s.draft.paste is None:
                ui.notify("the heat map needs a copy and a paste box", type="warning")
        self.gallery.clear()
        self.tiles.clear()
        with self.gallery:
            for i, (seed, img) in enumerate(zip(seeds, images, strict=True)):
                shown = heat_overlay(img, heat[i]) if heat is not None else img
                with ui.column().classes("gap-0 items-center"):
                    tile = ui.interactive_image(data_url(png(shown)), content=self.tile_content(seed),
                                                events=["mousedown", "mouseup"], cross=False,
                                                on_mouse=lambda e, seed=seed: self.mouse(seed, e)) \
                        .classes("pixelated tile").props(f"data-seed={seed}")
                    ui.label(f"seed {seed}").classes("text-caption")
                self.tiles[seed] = tile
        self.show_request()
        goal = await self.act(s.goal, quiet=True) if s.draft.paste is not None else None
        self.goal.set_source(data_url(png(goal)) if goal is not None else "")
        if s.draft.paste is not None and s.draft.copy is not None:
            self.later(self.prepare_quietly)

    async def prepare_quietly(self) -> None:
        """Snapshots for the next run while the user looks (errors surface when they click run)."""
        await self.act(self.studio.runs.prepare, quiet=True)

    def show_request(self) -> None:
        d = self.studio.draft

        def where(r: Any) -> str:
            return "—" if r is None else f"seed {r.seed} box {list(r.box) if r.box else r.mask_path}"

        heldout = f"{len(d.heldout)} region(s)" if d.heldout else f"the paste box on {HELDOUT_COUNT} unseen seeds"
        rule = "" if d.rule is None else f"; ground truth: toy rule {d.rule}"
        self.request_info.text = (f"copy:  {where(d.copy)}\npaste: {where(d.paste)}\ncontext: {len(d.context)} "
                                  f"region(s) (+ the paste)\nheld-out: {heldout}{rule}")
        self.context_list.clear()
        with self.context_list:
            for i, r in enumerate(d.context[:12]):
                with ui.row().classes("items-center gap-1"):
                    ui.label(f"context {i}: {where(r)}").classes("text-caption")
                    ui.button("×", on_click=lambda i=i: self.remove_context(i)).props("flat dense size=sm")
            if len(d.context) > 12:
                ui.label(f"… and {len(d.context) - 12} more").classes("text-caption")

    async def mouse(self, seed: int, e: MouseEventArguments) -> None:
        if e.type == "mousedown":
            self.drag = {seed: (e.image_x, e.image_y)}
            return
        if e.type != "mouseup" or seed not in self.drag:
            return
        (x0, y0), (x1, y1) = self.drag.pop(seed), (e.image_x, e.image_y)
        s, mode = self.studio, self.mode.value
        if mode == "copy":
            done = await self.act(s.set_copy, seed, [x0, y0, x1, y1])
        elif mode == "paste":
            done = await self.act(s.place_paste, seed, (x1, y1))
        else:
            done = await self.act(s.add_context, seed, [x0, y0, x1, y1])
        if done is not None:
            if mode == "copy":
                self.mode.value = "paste"
            await self.refresh()

    async def remove_context(self, index: int) -> None:
        await self.act(self.studio.remove_context, index)
        await self.refresh()

    async def clear_context(self) -> None:
        await self.act(self.studio.clear_context)
        await self.refresh()

    async def top_matches(self) -> None:
        added = await self.act(self.studio.add_top_matches, self.studio.page(self.page_no), 4, self.strategy.value)
        if added is not None:
            ui.notify(f"added {len(added)} context region(s) where the direction fires most")
            await self.refresh()

    async def upload_mask(self, e: UploadEventArguments) -> None:
        data = await e.file.read()
        if await self.act(self.studio.add_context, int(self.mask_seed.value or 0), None, data) is not None:
            await self.refresh()

    # --- run ----------------------------------------------------------------------------
    async def show_settings(self) -> None:
        """One input per strategy setting, filled with the value a run would use (tuned defaults included)."""
        if self.studio.model is None:
            return
        values = await self.act(self.studio.runs.strategy_settings, self.strategy.value)
        self.settings_box.clear()
        self.settings = {}
        self.defaults = values or {}
        with self.settings_box:
            for k, v in self.defaults.items():
                self.settings[k] = ui.input(k, value=str(v)).props("dense").classes("w-full")

    def changed_settings(self) -> dict[str, Any]:
        import yaml

        out = {}
        for k, field in self.settings.items():
            if str(self.defaults.get(k)) != field.value:
                out[k] = yaml.safe_load(field.value)
        return out

    def show_progress(self) -> None:
        fraction, text = self.progress
        self.bar.value = fraction
        self.bar_label.text = text

    async def run_edit(self) -> None:
        if self.busy:
            return
        self.busy = True
        self.run_button.disable()
        self.progress = (0.01, "waiting for the model")

        def say(fraction: float, text: str) -> None:
            self.progress = (fraction, text)

        try:
            outcome = await self.act(self.studio.runs.run, self.strategy.value, self.changed_settings(), say)
        finally:
            self.busy = False
            self.run_button.enable()
        if outcome is None:
            self.progress = (0.0, "failed (see the message)")
            return
        self.progress = (1.0, f"done in {outcome.seconds:.1f} s (fit {outcome.metrics['edit_time_s']:.2f} s)")
        self.show_outcome(outcome)
        ceiling = await self.act(self.studio.runs.ceiling, quiet=True)
        if ceiling:
            self.ceiling_label.text = ("paste ceiling at this layer: efficacy "
                                       f"{_num(ceiling['ceiling_efficacy'])}, generality "
                                       f"{_num(ceiling['ceiling_generality'])} "
                                       f"({ceiling['n_ceiling_heldout']} samples)")

    def show_outcome(self, o: RunOutcome) -> None:
        self.outcome = o
        m = o.metrics
        rows = "".join(f"<tr><td>{n}</td><td data-metric='{n}'>{_num(m.get(n))}</td>"
                       f"<td>[{_num(m.get(n + '_ci_low'))}, {_num(m.get(n + '_ci_high'))}]</td></tr>"
                       for n in HEADLINE)
        source = ("exact ideal (toy world)" if m.get("score_source") == "toy_ideal"
                  else "the paste goal on each held-out sample")
        self.scores.content = (f"<div>run {html.escape(o.run_id)}: scored against {source}, "
                               f"{m.get('n_heldout')} held-out samples, fit {_num(m.get('edit_time_s'), 2)} s</div>"
                               f"<table class='scores'><tr><th></th><th>score</th><th>95% interval</th></tr>{rows}"
                               "</table>")
        self.ceiling_label.text = ""
        self.grid_image.set_source(file_url(self.studio, o.grid))
        self.downloads.clear()
        with self.downloads:
            ui.link("edit.safetensors", file_url(self.studio, o.edit_file)).props("download data-testid=edit-link")
            ui.link("request.yaml", file_url(self.studio, o.request_file)).props("download data-testid=yaml-link")
            ui.link("metrics.json", file_url(self.studio, o.folder / "metrics.json")).props("download")
        self.command.text = o.command

    async def keep(self) -> None:
        if self.outcome is None:
            ui.notify("run an edit first", type="negative", classes="studio-error")
            return
        edits = await self.act(self.studio.history.keep, self.outcome.run_id)
        if edits is not None:
            self.show_history(edits)
            await self.refresh()

    async def undo(self) -> None:
        edits = await self.act(self.studio.history.undo)
        if edits is not None:
            self.show_history(edits)
            await self.refresh()

    def show_history(self, edits: list[Path]) -> None:
        names = ", ".join(p.parent.name for p in edits) or "no kept edit"
        self.history_label.text = f"history ({len(edits)} kept): {names}"


def _num(v: Any, digits: int = 3) -> str:
    return "–" if not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def serve(studio: Studio, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the page until the process is stopped."""
    mount_files(studio)

    @ui.page("/")
    def index() -> None:
        Page(studio)

    ui.run(host=host, port=port, reload=False, show=False, title="rewrite studio", show_welcome_message=True,
           uvicorn_logging_level="warning")
