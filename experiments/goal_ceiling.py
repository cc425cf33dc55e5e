"""How well does each rule's request, pasted in pixels (the goal image), match the ideal edit?

    python experiments/goal_ceiling.py [CHECKPOINT]

The toy scorer's target efficacy applied to the goal image instead of a generated one. Set beside the paste
ceiling (the same request pasted in a layer's features and drawn by the generator) it says where a low ceiling
comes from: the copy itself (goal efficacy low) or the way the generator draws pasted features (goal high,
ceiling low). Uses the scorer's scene snapshot class directly (a diagnostic, not a public interface).
"""
import sys

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rewrite.core.problem import build_problem
from rewrite.core.site import make_site
from rewrite.eval.rule_metrics import to01
from rewrite.pipeline import CONF_DIR, load_request
from rewrite.toyworld.models.segmenter import load_toy_segmenter
from rewrite.toyworld.requests.score import _Scenes, goal_reached

torch.set_num_threads(1)
ckpt = sys.argv[1] if len(sys.argv) > 1 else "null"
seg = load_toy_segmenter()
for rule in ["dome_to_spire", "remove_watermark", "add_tree", "no_reflections"]:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["generator=toy_stylegan2", f"edit=toy_{rule}",
                                           f"generator.model.checkpoint={ckpt}"])
    adapter = instantiate(cfg.generator.model)
    request = load_request(cfg.edit, 0)
    site = make_site(adapter, cfg.generator.layer)
    prob = build_problem(site, request, torch.eye(site.key_dim, dtype=torch.float64))
    s = _Scenes(adapter, prob.z_target, rule, cfg.eval.tol, cfg.eval.margin, seg)
    goal = to01(prob.target_image)
    r_goal = goal_reached(goal, s.ideal, s.footprint, cfg.eval.tol, seg.labels(goal), s.ideal_labels)
    r_ideal = goal_reached(s.ideal, s.ideal, s.footprint, cfg.eval.tol, seg.labels(s.ideal), s.ideal_labels)
    print(f"{rule:18s} layer {cfg.generator.layer}: goal-image efficacy {float(r_goal.mean()):.3f}  "
          f"(ideal render itself {float(r_ideal.mean()):.3f}, footprint px {int(s.footprint.sum())})", flush=True)
