"""Every bad input in the README's table gets the error it promises (type and message), and the table lists them all."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from rewrite.core.files import writable_dir
from rewrite.core.problem import build_problem
from rewrite.core.request import EditRequest, EditRequestError
from rewrite.core.site import EditSite, make_site
from rewrite.core.stats import StatsCache, key_statistics
from rewrite.editfile.artifact import EditArtifact, WrongBaseError
from rewrite.generators.dcgan_face import load_dcgan_face
from rewrite.generators.tiny import load_tiny
from rewrite.pipeline import build_scorers
from rewrite.strategies.base import EditResult
from rewrite.strategies.rank_one import RankOne
from rewrite.toyworld import ideal_edit, params_from_z, sample_z
from rewrite.toyworld.models.generator import build_toy_generator, load_toy_stylegan2
from tests.conftest import tiny_problem, warns_and_goes_on

ROOT = Path(__file__).resolve().parent.parent
BOX = {"name": "b", "copy": {"seed": 1, "box": [4, 4, 10, 8]}, "paste": {"seed": 2, "box": [6, 8, 12, 12]}}


def _request(**changes: object) -> EditRequest:
    return EditRequest.from_dict({**BOX, **changes})


def _problem_with(request: EditRequest) -> None:
    site = make_site(load_tiny(), "main.4", "main.6")
    build_problem(site, request, torch.eye(site.key_dim, dtype=torch.float64))


def _edit_file(tmp: Path, base_sha256: str) -> Path:
    art = EditArtifact.from_result(EditResult({"main.4.weight": torch.zeros(16, 16, 4, 4)}), base_sha256)
    return art.save(tmp / "edit.safetensors")


def _wrong_base(tmp: Path) -> None:
    EditArtifact.load(_edit_file(tmp, "0" * 64)).new_values(load_tiny().model.state_dict())


def _corrupt_edit(tmp: Path) -> None:
    path = _edit_file(tmp, "0" * 64)
    path.write_bytes(path.read_bytes()[:64])
    EditArtifact.load(path)


def _pickled_code(tmp: Path) -> None:
    torch.save({"netG_state_dict": nn.Linear(2, 2)}, tmp / "code.tar")  # a module object, not tensors
    load_dcgan_face(str(tmp / "code.tar"))


def _mismatched_checkpoint(tmp: Path) -> None:
    torch.save({"netG_state_dict": {"main.0.weight": torch.zeros(3)}}, tmp / "other.tar")
    load_dcgan_face(str(tmp / "other.tar"))


def _old_toy_checkpoint(tmp: Path) -> None:
    g = build_toy_generator({"w_dim": 8, "channels": {4: 8, 8: 8, 16: 8, 32: 8, 64: 8}})
    torch.save({"g_ema": g.state_dict()}, tmp / "v1.pt")  # no `architecture`: a first-world checkpoint
    load_toy_stylegan2(str(tmp / "v1.pt"))


def _nan_keys(tmp: Path) -> None:
    adapter = load_tiny()
    with torch.no_grad():
        adapter.model.main[0].weight[0, 0] = float("nan")
    key_statistics(EditSite(adapter, "main.4", "main.6"), None, 16, 8, progress=False)


def _paste_off_grid(tmp: Path) -> None:
    """Copy and paste boxes 1 px apart, at a layer whose value has 2 px cells."""
    tiny_problem(request={"name": "off", "copy": {"seed": 1, "box": [4, 4, 10, 8]},
                          "paste": {"seed": 2, "box": [5, 8, 11, 12]}})


def _nan_cache(tmp: Path) -> None:
    """Not an error: the poisoned cache file is named in a warning, deleted and recomputed."""
    site = EditSite(load_tiny(), "main.4", "main.6")
    cache = StatsCache(tmp / "cache")
    first = key_statistics(site, cache, 16, 8, progress=False)
    clean = first.moment.clone()
    path = next((tmp / "cache").glob("*.safetensors"))
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    state["sum"][0, 0] = float("nan")
    save_file(state, str(path), metadata=meta)
    again = key_statistics(site, cache, 16, 8, progress=False)
    assert not again.cached and torch.equal(again.moment, clean)  # recomputed from scratch, not read


def _scorer_without_metrics(tmp: Path) -> None:
    cfg = OmegaConf.create({"eval": {"tol": 0.1, "margin": 1, "scorers": {"mine": {"_target_": "builtins.dict"}}},
                            "split": {"heldout_offset": 0}})
    build_scorers(cfg, load_tiny(), _request())


def _unwritable_parent(tmp: Path) -> None:
    (tmp / "a_file").write_text("x")
    writable_dir(tmp / "a_file" / "run")


def _unwritable_folder(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rewrite.core.files

    monkeypatch.setattr(rewrite.core.files.os, "access", lambda path, mode: False)  # as a non-root user sees chmod 555
    writable_dir(tmp)


CASES: dict[str, tuple[type[BaseException] | None, str, Callable[..., object]]] = {
    "unknown_layer": (KeyError, "has no layer named 'main.99'. Did you mean",
                      lambda tmp: make_site(load_tiny(), "main.99")),
    "bad_value_at": (ValueError, "a relative value_at is '+n'", lambda tmp: make_site(load_tiny(), "main.4", "+x")),
    "empty_box": (EditRequestError, "is empty (need x0 < x1 and y0 < y1)",
                  lambda tmp: _request(copy={"seed": 1, "box": [3, 3, 3, 9]}).validate(16)),
    "box_outside_image": (EditRequestError, "lies outside the 16x16 image",
                          lambda tmp: _request(paste={"seed": 2, "box": [10, 10, 20, 14]}).validate(16)),
    "copy_paste_sizes_differ": (EditRequestError, "they must be the same size",
                                lambda tmp: _request(paste={"seed": 2, "box": [0, 0, 8, 8]}).validate(16)),
    "unknown_request_field": (EditRequestError, "unknown edit request fields ['colour']",
                              lambda tmp: _request(colour="red")),
    "missing_request_file": (EditRequestError, "edit request file not found",
                             lambda tmp: EditRequest.load(tmp / "nope.yaml")),
    "region_selects_no_cell": (ValueError, "selects no feature cell of the layer's 4x4 key grid",
                               lambda tmp: _problem_with(_request(copy={"seed": 1, "box": [0, 0, 1, 1]},
                                                                  paste={"seed": 2, "box": [5, 5, 6, 6]}))),
    "unknown_strategy_setting": (TypeError, "rank_one: unknown settings ['lr_decay']",
                                 lambda tmp: RankOne(lr_decay=0.5)),
    "impossible_strategy_setting": (ValueError, "rank must be ≥ 1", lambda tmp: RankOne(rank=0)),
    "bad_stats_dtype": (ValueError, "stats dtype must be one of",
                        lambda tmp: key_statistics(EditSite(load_tiny(), "main.4"), None, 8, dtype="float8")),
    "nan_keys": (ValueError, "are not finite", _nan_keys),
    "paste_off_the_feature_grid": (None, "not a whole number of main.6's 2-px cells", _paste_off_grid),
    "nan_statistics_cache": (None, "holds NaN/Inf values; deleting it, it will be recomputed", _nan_cache),
    "missing_checkpoint": (FileNotFoundError, "checkpoint not found",
                           lambda tmp: load_dcgan_face(str(tmp / "nope.tar"))),
    "checkpoint_with_code": (ValueError, "cannot read checkpoint", _pickled_code),
    "checkpoint_of_another_model": (ValueError, "does not match the model", _mismatched_checkpoint),
    "first_world_toy_checkpoint": (ValueError, "not a toy generator checkpoint", _old_toy_checkpoint),
    "edit_for_another_base": (WrongBaseError, "this edit was made on weights with sha256", _wrong_base),
    "corrupt_edit_file": (ValueError, "is not a readable edit file", _corrupt_edit),
    "scorer_without_metrics": (TypeError, "has no metrics() method", _scorer_without_metrics),
    "output_folder_under_a_file": (NotADirectoryError, "is a file", _unwritable_parent),
    "unwritable_output_folder": (PermissionError, "is not writable", _unwritable_folder),
    "unknown_toy_rule": (ValueError, "unknown rule 'dome_to_castle'",
                         lambda tmp: ideal_edit(params_from_z(sample_z(1)), "dome_to_castle")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_its_error(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  caplog: pytest.LogCaptureFixture) -> None:
    exc, message, trigger = CASES[case]
    args = (tmp_path, monkeypatch) if trigger is _unwritable_folder else (tmp_path,)
    if exc is None:  # not an error: a logged warning, and the work goes on
        warns_and_goes_on(caplog, message, lambda: trigger(*args))
        return
    with pytest.raises(exc, match=re.escape(message)):
        trigger(*args)


def _readme_rows() -> dict[str, tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and not cells[0].startswith("`-"):
            rows[cells[0].strip("`")] = (cells[2].strip("`"), cells[3])
    return rows


def _all_cases() -> dict[str, tuple[type[BaseException] | None, str, object]]:
    """CASES of this module and of every other tests/test_bad_inputs_<area>.py (one area per module)."""
    import importlib.util

    cases = dict(CASES)
    for path in sorted(ROOT.glob("tests/test_bad_inputs_*.py")):
        spec = importlib.util.spec_from_file_location(f"_bad_inputs_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        clash = set(cases) & set(module.CASES)
        assert not clash, f"{path.name} repeats case names {sorted(clash)}"
        cases.update(module.CASES)
    return cases


def test_readme_table_lists_every_case_with_its_error() -> None:
    rows, cases = _readme_rows(), _all_cases()
    assert set(rows) == set(cases), ("README '## Bad input' table and tests/test_bad_inputs*.py disagree: "
                                     f"only in README {sorted(set(rows) - set(cases))}, "
                                     f"only in tests {sorted(set(cases) - set(rows))}")
    for case, (exc, message) in rows.items():
        expected = cases[case][0]
        assert ("warning" in exc.lower()) if expected is None else exc == expected.__name__, case
        assert cases[case][1] in message.replace("\\|", "|"), case
    assert len(rows) >= 15
