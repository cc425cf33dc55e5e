"""Erase requests (the paper's watermark experiment) and the GAN Dissection baseline, on the tiny generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from rewrite.core.erase import erase_value, generate_with_value, top_units
from rewrite.core.problem import EditProblem, build_problem
from rewrite.core.request import EditRequest, EditRequestError, resample
from rewrite.core.site import make_site
from rewrite.core.stats import collect_key_moment
from rewrite.eval.evaluate import Evaluator
from rewrite.strategies.closed_form import ClosedForm
from rewrite.strategies.gan_dissection import GanDissection
from rewrite.strategies.projected_adam import ProjectedAdam
from rewrite.strategies.rank_one import RankOne
from tests.conftest import tiny_problem
from tests.test_modulated_site import tiny_stylegan2
from tests.test_run import TINY, rewrite_cli

ERASE = {
    "name": "tiny_erase",
    "kind": "erase",
    "units": 4,
    "paste": {"seed": 2, "box": [4, 4, 12, 12]},
    "context": [{"seed": 3, "box": [4, 4, 12, 12]}, {"seed": 4, "box": [0, 4, 8, 12]}],
    "heldout": [{"seed": 10, "box": [4, 4, 12, 12]}, {"seed": 11, "box": [2, 2, 8, 8]}],
}


@pytest.fixture
def erase_problem() -> EditProblem:
    return tiny_problem(request=ERASE)


def value_loss(problem: EditProblem, weights: dict[str, torch.Tensor]) -> float:
    with problem.site.adapter.edited(weights):
        return float(problem.value_loss(problem.site.capture(problem.z_target).value))


# --- the request ----------------------------------------------------------------------------
def test_erase_request_parses_and_stays_hashable(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(ERASE))
    r = EditRequest.load(tmp_path / "r.yaml")
    assert r.is_erase and r.copy is None and r.units == 4 and r.paste.seed == 2
    assert hash(r) == hash(EditRequest.from_dict(ERASE)) and r == EditRequest.from_dict(ERASE)
    r.validate(16)
    assert EditRequest.from_dict({k: v for k, v in ERASE.items() if k != "units"}).units == 8
    paste = EditRequest.from_dict({"copy": {"seed": 1, "box": [0, 0, 4, 4]}, "paste": {"seed": 2, "box": [0, 0, 4, 4]}})
    assert paste.kind == "paste" and not paste.is_erase
    with pytest.raises(EditRequestError, match="erase request: it has no copied region"):
        r.paste_offset(16)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"copy": {"seed": 1, "box": [4, 4, 12, 12]}}, "erase request has no 'copy'"),
        ({"units": 0}, "units must be an integer ≥ 1"),
        ({"units": 2.5}, "units must be an integer ≥ 1"),
        ({"units": True}, "units must be an integer ≥ 1"),
        ({"kind": "remove"}, "kind must be one of"),
        ({"kind": "paste", "units": None}, "needs a 'copy' region"),
        ({"kind": "paste", "copy": {"seed": 1, "box": [4, 4, 12, 12]}}, "'units' belongs to erase requests"),
        ({"paste": None}, "needs a 'paste' region"),
        ({"kind": "paste", "copy": {"seed": 1, "box": [4, 4, 12, 12]}, "units": None,
          "contrast": [{"seed": 5, "box": [4, 4, 12, 12]}]}, "'contrast' regions belong to erase requests"),
    ],
)
def test_erase_request_errors(over: dict, message: str) -> None:
    with pytest.raises(EditRequestError, match=message):
        EditRequest.from_dict({**ERASE, **over})


def test_more_units_than_channels_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot switch off 17 units: the value has 16 channels"):
        tiny_problem(request={**ERASE, "units": 17})


# --- unit selection and the erased value ------------------------------------------------------
def test_top_units_match_a_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    values = torch.randn(2, 6, 4, 4, generator=g)  # signed: the rule reads the positive part
    values[:, 2, 1:3, 1:3] += 3.0  # unit 2 fires inside the region
    alphas = torch.zeros(2, 4, 4)
    alphas[0, 1:3, 1:3] = 1.0
    alphas[1, 1:3, 1:3] = 1.0
    alphas[1, 0, 1] = 0.5  # partial coverage counts half inside, half outside
    act = values.clamp_min(0)
    overall = sum(float(act[n, u, y, x]) for n in range(2) for u in range(6) for y in range(4) for x in range(4)) / 192
    scores = []
    for u in range(6):
        si = so = wi = wo = 0.0
        for n in range(2):
            for y in range(4):
                for x in range(4):
                    a, v = float(alphas[n, y, x]), float(act[n, u, y, x])
                    si, so, wi, wo = si + a * v, so + (1 - a) * v, wi + a, wo + 1 - a
        scores.append((si / wi) / (so / wo + 1e-3 * overall))
    expected = sorted(range(6), key=lambda u: -scores[u])[:3]
    assert top_units(values, alphas, 3).tolist() == expected
    assert expected[0] == 2


def test_contrast_regions_rank_units_against_the_same_place_without_the_thing() -> None:
    g = torch.Generator().manual_seed(1)
    values = torch.rand(2, 5, 4, 4, generator=g)
    alphas = torch.zeros(2, 4, 4)
    alphas[:, 1:3, 1:3] = 1.0
    values[:, 1, 1:3, 1:3] += 2.0  # unit 1: the place (fires in the box with or without the thing)
    values[:, 3, 1:3, 1:3] += 1.0  # unit 3: the thing (fires in the box only where it is drawn)
    contrast = values.clone()
    contrast[:, 3] = torch.rand(2, 4, 4, generator=g)  # no thing in the contrast images
    assert top_units(values, alphas, 1).tolist() == [1]  # against the outside, the place wins
    act, cact = values.clamp_min(0).double(), contrast.clamp_min(0).double()
    inside = act[:, :, 1:3, 1:3].mean((0, 2, 3))
    reference = cact[:, :, 1:3, 1:3].mean((0, 2, 3))
    expected = torch.argsort(-(inside / (reference + 1e-3 * act.mean())))[:2]
    got = top_units(values, alphas, 2, (contrast, alphas))
    assert got.tolist() == expected.tolist() and got[0] == 3  # against the contrast, the thing wins


def test_problem_selects_units_over_paste_and_context(erase_problem: EditProblem) -> None:
    p, site = erase_problem, erase_problem.site
    adapter = site.adapter
    seeds = [2, 3, 4]
    values = site.capture(adapter.sample_z(seeds)).value
    hv, wv = values.shape[-2:]
    req = EditRequest.from_dict(ERASE)
    alphas = torch.stack([resample(r.mask(16), hv, wv) for r in (req.paste, *req.context)])
    assert p.erase_units is not None and torch.equal(p.erase_units, top_units(values, alphas, 4))


def test_erase_value_zeroes_only_the_units_inside_the_mask() -> None:
    value = torch.rand(1, 6, 4, 4) + 0.5
    mask = torch.zeros(4, 4)
    mask[1:3, 0:2] = 1.0
    units = torch.tensor([4, 1])
    out = erase_value(value, units, mask)
    zeroed = torch.zeros_like(value, dtype=torch.bool)
    zeroed[:, [1, 4], 1:3, 0:2] = True
    assert bool((out[zeroed] == 0).all()) and torch.equal(out[~zeroed], value[~zeroed])
    flat = torch.rand(1, 6) + 0.5  # a Linear value: one position
    assert torch.equal(erase_value(flat, units, torch.ones(1, 1)), flat * torch.tensor([1, 0, 1, 1, 0, 1.0]))


def test_generate_with_unmodified_value_is_the_generator_image(erase_problem: EditProblem) -> None:
    site = erase_problem.site
    z = site.adapter.sample_z([5, 6])
    assert torch.equal(generate_with_value(site, z, site.capture(z).value), site.adapter.generate(z))


def test_erase_problem_goal_tensors(erase_problem: EditProblem) -> None:
    p, site = erase_problem, erase_problem.site
    assert torch.equal(p.z_source, p.z_target) and p.erase_units is not None
    alpha = resample(p.request.paste.mask(16), 8, 8)
    assert torch.equal(p.value_weight, alpha)
    assert torch.equal(p.target_value, erase_value(p.target.value, p.erase_units, alpha))
    assert torch.equal(p.target_image, generate_with_value(site, p.z_target, p.target_value))
    # The layer-output target is an exact preimage through BatchNorm + ReLU.
    torch.testing.assert_close(site.tail(p.target_layer_out), p.target_value, rtol=0, atol=1e-6)
    at_layer = tiny_problem(value_at=None, request=ERASE)  # value = layer output: the same erase
    assert at_layer.erase_units is not None
    assert torch.equal(at_layer.target_layer_out, at_layer.target_value)
    assert torch.equal(at_layer.target_value, erase_value(at_layer.target.value, at_layer.erase_units, alpha))


# --- strategies -----------------------------------------------------------------------------
def test_the_rank_one_family_inserts_the_erase(erase_problem: EditProblem) -> None:
    p = erase_problem
    before = float(p.value_loss(p.target.value))
    assert before > 0
    for strategy in (RankOne(), ClosedForm(), ProjectedAdam(steps=50, lr=0.01)):
        weights = strategy.run(p).weights
        assert value_loss(p, weights) < before, strategy.name


def test_gan_dissection_zeroes_exactly_the_unit_rows(erase_problem: EditProblem) -> None:
    p, site = erase_problem, erase_problem.site
    assert p.erase_units is not None
    res = GanDissection().run(p)
    assert res.delta is None and set(res.weights) == {"main.4.weight", "main.4.bias"}
    w0, w1 = site.weight, res.weights["main.4.weight"]  # ConvTranspose2d: (in, out, k, k)
    units = p.erase_units.tolist()
    others = [u for u in range(w0.shape[1]) if u not in units]
    assert bool((w1[:, units] == 0).all()) and torch.equal(w1[:, others], w0[:, others])
    b0, b1 = site.layer.bias, res.weights["main.4.bias"]
    assert bool((b1[units] == 0).all()) and torch.equal(b1[others], b0[others])
    # Edited model: those value channels sit at BatchNorm + ReLU of a zero output (the bias-only level).
    z = site.adapter.sample_z([2, 10, 11])
    zero = site.tail(torch.zeros(1, w0.shape[1], 8, 8))
    with site.adapter.edited(res.weights):
        v = site.capture(z).value
    torch.testing.assert_close(v[:, units], zero[:, units].expand(3, -1, -1, -1), rtol=0, atol=1e-6)
    assert value_loss(p, res.weights) < float(p.value_loss(p.target.value))


def test_gan_dissection_needs_an_erase(problem: EditProblem) -> None:
    with pytest.raises(ValueError, match="needs an erase request"):
        GanDissection().run(problem)


def test_erase_at_a_stylegan2_layer() -> None:
    adapter = tiny_stylegan2()
    site = make_site(adapter, "convs.2")
    c = collect_key_moment(site, 32, 16, seed=0, progress=False).moment
    p = build_problem(site, EditRequest.from_dict({**ERASE, "units": 3}), c)
    with pytest.raises(ValueError, match="closed form is not defined for this erase"):
        ClosedForm().run(p)
    assert value_loss(p, RankOne().run(p).weights) < float(p.value_loss(p.target.value))
    res = GanDissection().run(p)
    w0, w1 = site.weight, res.weights[site.weight_name]  # (1, out, in, k, k)
    assert p.erase_units is not None and set(res.weights) == {site.weight_name}
    keep = torch.ones(w0.shape[1], dtype=torch.bool)
    keep[p.erase_units] = False
    assert bool((w1[:, ~keep] == 0).all()) and torch.equal(w1[:, keep], w0[:, keep])


# --- evaluation and the command line ----------------------------------------------------------
def test_evaluator_goals_are_the_same_erase(erase_problem: EditProblem) -> None:
    p, site = erase_problem, erase_problem.site
    ev = Evaluator(p, None, tol=0.005)
    assert [i for i, *_ in ev.goals] == [0, 1] and p.erase_units is not None
    _, img, val, alpha = ev.goals[1]
    seeds = [r.seed for r in p.request.heldout]
    value = site.capture(site.adapter.sample_z(seeds)).value[1:2]  # the held-out values, read in one pass
    assert torch.equal(alpha, resample(p.request.heldout[1].mask(16), 8, 8))
    assert torch.equal(val, erase_value(value, p.erase_units, alpha))
    assert torch.equal(img, generate_with_value(site, site.adapter.sample_z([seeds[1]]), val))
    m = ev.metrics()  # nothing edited yet: no goal reached where the goal differs
    assert m["efficacy"] == 0 and m["specificity"] == 1


@pytest.mark.parametrize("strategy", ["gan_dissection", "rank_one"])
def test_cli_erase_run(tmp_path: Path, strategy: str) -> None:
    (tmp_path / "erase.yaml").write_text(yaml.safe_dump(ERASE))
    args = [*TINY, f"edit.file={tmp_path / 'erase.yaml'}", f"strategy={strategy}", "logger=none",
            f"hydra.run.dir={tmp_path}/run"]
    proc = rewrite_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["strategy"] == strategy and m["n_heldout"] == 2
    assert m["value_loss"] < m["value_loss_before"]
    for key in ("efficacy", "generality", "specificity", "edit_score"):
        assert 0 <= m[key] <= 1, key
    assert (tmp_path / "run" / "grid.png").stat().st_size > 0
