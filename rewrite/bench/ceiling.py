"""Choose a layer before any edit: the paste ceiling of one request at several layers, as a table.

    python -m rewrite.bench.ceiling --layers convs.3,convs.4,convs.5 generator=toy_stylegan2 edit=toy_add_tree
    python -m rewrite.bench.ceiling --layers main.3,main.4,main.6 edit=face_eyeglasses

Everything after the flags is a Hydra override of the run's config (`rewrite/conf/config.yaml`). For each
layer the request's v* is drawn in place of the layer's value (no statistics, no fit; `rewrite.eval.ceiling`)
and scored by the run's headline scorer: a layer whose ceiling is low cannot carry the edit whatever the
strategy does.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from rewrite.core.problem import build_problem
from rewrite.core.site import make_site
from rewrite.generators.base import GeneratorAdapter
from rewrite.pipeline import CONF_DIR, ceiling_metrics, load_request


def layer_ceilings(cfg: DictConfig, layers: list[str]) -> list[dict[str, object]]:
    """One row per layer: its key grid and the ceiling figures, or the reason the request does not fit it."""
    adapter: GeneratorAdapter = instantiate(cfg.generator.model)
    request = load_request(cfg.edit, cfg.split.heldout_offset)
    request.validate(adapter.resolution)
    request = dataclasses.replace(request, context=())  # context chooses directions; the ceiling has none
    rows: list[dict[str, object]] = []
    for layer in layers:
        site = make_site(adapter, layer, cfg.generator.get("value_at") if layer == cfg.generator.layer else None)
        with torch.no_grad():
            keys = site.capture(adapter.sample_z([request.paste.seed])).keys
        row: dict[str, object] = {"layer": layer, "keys": "x".join(str(s) for s in keys.shape[-2:])}
        try:  # C is not needed to draw v*: the identity stands in for it
            problem = build_problem(site, request, torch.eye(site.key_dim, dtype=torch.float64))
        except ValueError as e:
            rows.append({**row, "error": str(e)})
            continue
        rows.append({**row, **ceiling_metrics(cfg, adapter, problem)})
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    def num(v: object) -> str:
        return "  -" if not isinstance(v, float) or math.isnan(v) else f"{v:.3f}"

    lines = [f"{'layer':<12} {'keys':<7} {'ceiling_efficacy':>16} {'ceiling_generality':>18} {'n_heldout':>9}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['layer']:<12} {r['keys']:<7} does not fit: {r['error']}")
        else:
            lines.append(f"{r['layer']:<12} {r['keys']:<7} {num(r['ceiling_efficacy']):>16} "
                         f"{num(r['ceiling_generality']):>18} {r['n_ceiling_heldout']:>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", required=True, help="comma-separated layer names (dotted module paths)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. generator=toy_stylegan2 edit=toy_add_tree")
    args = ap.parse_args(argv)
    layers = [x for x in args.layers.split(",") if x]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*args.overrides, "progress=false"])
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    print(f"paste ceiling of {cfg.edit.get('name') or cfg.edit.get('rule') or 'the request'} "
          f"(v* drawn in place of each layer's value; no fit)")
    print(format_table(layer_ceilings(cfg, layers)), flush=True)


if __name__ == "__main__":
    main()
