"""Checked inputs: config values, request files, masks, the statistics cache and diverging fits get a clear error
(or a logged warning and a correct result), triggered as a user types them: `python -m rewrite ...`, in this process.

`CASES` has the format of `tests/test_bad_inputs.py` (whose README test reads it): name -> (exception type, or None
for a logged warning, message substring, trigger(tmp_path)).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
import torch
from hydra.errors import InstantiationException
from safetensors import safe_open
from safetensors.torch import save_file

import rewrite.cli
from rewrite.core.request import EditRequest, EditRequestError
from rewrite.core.site import EditSite
from rewrite.core.stats import STALE_TEMP_S, StatsCache, key_statistics
from rewrite.editfile.artifact import EditArtifact
from rewrite.eval.rule_metrics import dilate, goal_image_scores
from rewrite.generators.tiny import load_tiny
from rewrite.runner.outputs import EDIT_FILE, save_edit
from rewrite.strategies.base import EditResult
from tests.conftest import warns_and_goes_on

TINY = ["generator=tiny", "edit=tiny_box", "stats.num_samples=32", "stats.batch_size=16", "progress=false",
        "logger=none", "eval.perceptual=null"]
OK_REQUEST = "name: from_file\ncopy: {seed: 5, box: [4, 4, 10, 8]}\npaste: {seed: 6, box: [2, 2, 8, 6]}\n"


def main(*args: str) -> None:
    """`python -m rewrite <TINY> <args>` as typed, in this process. HYDRA_FULL_ERROR=1 makes Hydra raise the
    job's error instead of printing it (the same message; `rewrite.cli.main` does the same)."""
    with mock.patch.object(sys, "argv", ["rewrite", *TINY, *args]), \
            mock.patch.dict(os.environ, {"HYDRA_FULL_ERROR": "1"}):
        rewrite.cli.main()


def rewrite_cli(tmp: Path, *args: str) -> None:
    """`main(*args)` with the run folder `tmp/run`, unless `args` name one."""
    main(*([] if any(a.startswith(("hydra.", "-m")) for a in args) else [f"hydra.run.dir={tmp / 'run'}"]), *args)


def _diverging_fit(tmp: Path) -> None:
    """A fit whose loss turns NaN stops the run: no edit file, no metrics."""
    try:
        rewrite_cli(tmp, "strategy=projected_adam", "strategy.lr=1e37")
    finally:
        assert not (tmp / "run" / EDIT_FILE).exists() and not (tmp / "run" / "metrics.json").exists()


def _request_file(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _file_and_override(tmp: Path) -> None:
    path = _request_file(tmp, "ok.yaml", OK_REQUEST)
    rewrite_cli(tmp, f"edit.file={path}", "edit.paste.box=[0,0,6,4]")


def _in_a_file(tmp: Path, *args: str) -> None:
    (tmp / "some_file").write_text("x")
    rewrite_cli(tmp, *(a.replace("FILE", str(tmp / "some_file")) for a in args))


def _unwritable(tmp: Path) -> None:
    """Refused before Hydra creates the folder and opens its log file there (as a non-root user, Hydra's
    logging setup failed first: "Unable to configure handler 'file'")."""
    try:
        with mock.patch("os.access", return_value=False):  # what a non-root user sees in a chmod 555 folder
            rewrite_cli(tmp, f"hydra.run.dir={tmp / 'run'}")
    finally:
        assert not (tmp / "run").exists()


def _default_folder_is_a_file(tmp: Path) -> None:
    (tmp / "outputs").write_text("x")
    with contextlib.chdir(tmp):
        main()  # the config's own outputs/<date>/<time>_<strategy>


def _cached_stat(tmp: Path) -> tuple[EditSite, StatsCache, Path]:
    site, cache = EditSite(load_tiny(), "main.4", "main.6"), StatsCache(tmp / "cache")
    key_statistics(site, cache, 16, 8, progress=False)
    return site, cache, next((tmp / "cache").glob("*.safetensors"))


def _count_zero_cache(tmp: Path) -> None:
    """Not an error: the cached statistic without keys is named in a warning, deleted and recomputed."""
    site, cache, path = _cached_stat(tmp)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    save_file({"sum": torch.zeros(16, 16, dtype=torch.float64), "count": torch.tensor(0)}, str(path), metadata=meta)
    again = key_statistics(site, cache, 16, 8, progress=False)
    assert not again.cached and torch.isfinite(again.moment).all() and again.moment.abs().sum() > 0


def _leftover_temp_file(tmp: Path) -> None:
    """Not an error: a temporary file a killed run left in the cache is removed on the next use."""
    site, cache, _ = _cached_stat(tmp)
    left = _request_file(tmp / "cache", ".tmp-killed.safetensors", b"")
    os.utime(left, (left.stat().st_mtime - STALE_TEMP_S - 1,) * 2)
    assert key_statistics(site, cache, 16, 8, progress=False).cached
    assert not left.exists()


def _nan_edit_result(tmp: Path) -> None:
    adapter = load_tiny()
    weight = adapter.model.state_dict()["main.4.weight"].clone()
    weight[0, 0, 0, 0] = float("nan")
    try:
        save_edit(tmp, adapter, EditResult({"main.4.weight": weight}), "0" * 64, {"name": "x"},
                  EditRequest.load(_request_file(tmp, "ok.yaml", OK_REQUEST)))
    finally:
        assert not (tmp / EDIT_FILE).exists()


def _float_mask(tmp: Path) -> None:
    from PIL import Image

    Image.fromarray(torch.full((16, 16), 2.0).numpy()).save(tmp / "m.tiff")
    EditRequest.from_dict({"copy": {"seed": 1, "mask": "m.tiff"}, "paste": {"seed": 2, "box": [0, 0, 4, 4]}},
                          tmp).validate(16)


CASES: dict[str, tuple[type[BaseException] | None, str, Callable[..., object]]] = {
    "tolerance_infinite": (ValueError, "eval.tol must be a number in (0, 1], got inf",
                           lambda tmp: rewrite_cli(tmp, "eval.tol=inf")),
    "tolerance_nan": (ValueError, "eval.tol must be a number in (0, 1], got nan",
                      lambda tmp: rewrite_cli(tmp, "eval.tol=nan")),
    "tolerance_negative": (ValueError, "eval.tol must be in (0, 1], got -1.0",
                           lambda tmp: rewrite_cli(tmp, "eval.tol=-1")),
    "margin_negative": (ValueError, "eval.margin must be ≥ 0, got -3", lambda tmp: rewrite_cli(tmp, "eval.margin=-3")),
    "score_tolerance_zero": (ValueError, "tol must be in (0, 1], got 0.0",
                             lambda tmp: goal_image_scores(*torch.zeros(3, 1, 3, 4, 4), tol=0)),
    "score_margin_negative": (ValueError, "margin must be ≥ 0, got -3",
                              lambda tmp: dilate(torch.ones(1, 4, 4, dtype=torch.bool), -3)),
    "num_samples_not_a_number": (ValueError, "stats.num_samples must be an integer ≥ 1, got 'abc'",
                                 lambda tmp: rewrite_cli(tmp, "stats.num_samples=abc")),
    "num_samples_a_list": (ValueError, "stats.num_samples must be an integer ≥ 1, got [1, 2]",
                           lambda tmp: rewrite_cli(tmp, "stats.num_samples=[1,2]")),
    "batch_size_zero": (ValueError, "stats.batch_size must be ≥ 1, got 0",
                        lambda tmp: rewrite_cli(tmp, "stats.batch_size=0")),
    "lr_not_a_number": (InstantiationException, "strategy.lr must be a finite number, got 'abc'",
                        lambda tmp: rewrite_cli(tmp, "strategy.lr=abc")),
    "lr_infinite": (InstantiationException, "strategy.lr must be a finite number, got inf",
                    lambda tmp: rewrite_cli(tmp, "strategy=projected_adam", "strategy.lr=inf")),
    "lr_nan": (InstantiationException, "strategy.lr must be a finite number, got nan",
               lambda tmp: rewrite_cli(tmp, "strategy=layer_finetune", "strategy.lr=nan")),
    "rank_not_an_integer": (InstantiationException, "rank_one: strategy.rank must be an integer, got 1.5",
                            lambda tmp: rewrite_cli(tmp, "strategy.rank=1.5")),
    "unknown_perceptual_distance": (InstantiationException, "strategy.perceptual must be one of",
                                    lambda tmp: rewrite_cli(tmp, "strategy=full_finetune", "strategy.perceptual=vgg")),
    "diverging_fit": (RuntimeError, "projected_adam: the fit diverged (the loss is nan", _diverging_fit),
    "non_finite_edit_result": (ValueError, "refusing to write edit.safetensors: NaN/Inf in main.4.weight",
                               _nan_edit_result),
    "override_beside_request_file": (EditRequestError, "is the whole request; edit.paste.box=[0,0,6,4] beside it",
                                     _file_and_override),
    "truncated_json_request": (EditRequestError, "cut.json: line 3: Expecting property name",
                               lambda tmp: rewrite_cli(tmp, "edit.file=" + str(_request_file(
                                   tmp, "cut.json", '{"name": "x",\n "copy": {"seed": 1,\n')))),
    "bad_yaml_request": (EditRequestError, "bad.yaml: line 2: mapping values are not allowed here",
                         lambda tmp: rewrite_cli(tmp, "edit.file=" + str(_request_file(
                             tmp, "bad.yaml", "name: x\n  copy: 1\n")))),
    "request_not_utf8": (EditRequestError, "latin1.yaml: line 2: not UTF-8 text (byte 0xe9)",
                         lambda tmp: rewrite_cli(tmp, "edit.file=" + str(_request_file(
                             tmp, "latin1.yaml", "name: x\nnote: caf\xe9\n".encode("latin-1"))))),
    "float_mask_out_of_range": (EditRequestError, "a floating-point mask must hold fractions in [0, 1]", _float_mask),
    "stats_cache_without_keys": (None, "holds a key count of 0, which 16 images cannot give; deleting it",
                                 _count_zero_cache),
    "stats_cache_leftover_temp_file": (None, "a temporary file left by an interrupted run", _leftover_temp_file),
    "cli_output_folder_under_a_file": (NotADirectoryError, "hydra.run.dir: cannot use",
                                       lambda tmp: _in_a_file(tmp, "hydra.run.dir=FILE/run")),
    "cli_sweep_folder_under_a_file": (NotADirectoryError, "hydra.sweep.dir: cannot use",
                                      lambda tmp: _in_a_file(tmp, "-m", "hydra.sweep.dir=FILE/sweep")),
    "cli_default_output_folder_is_a_file": (NotADirectoryError,
                                            "cannot use outputs as output folder: outputs is a file",
                                            _default_folder_is_a_file),
    "cli_unwritable_output_folder": (PermissionError, "is not writable", _unwritable),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_input_gets_its_error(case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    exc, message, trigger = CASES[case]
    if exc is None:  # not an error: a logged warning, and the work goes on
        warns_and_goes_on(caplog, message, lambda: trigger(tmp_path))
        return
    with pytest.raises(exc, match=re.escape(message)):
        trigger(tmp_path)


def test_the_command_line_says_a_folder_error_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Without HYDRA_FULL_ERROR the folder error is one line on stderr and exit status 1, as Hydra reports a job's."""
    (tmp_path / "some_file").write_text("x")
    argv = ["rewrite", *TINY, f"hydra.run.dir={tmp_path / 'some_file' / 'run'}"]
    with mock.patch.object(sys, "argv", argv), mock.patch.dict(os.environ), pytest.raises(SystemExit) as exit_:
        os.environ.pop("HYDRA_FULL_ERROR", None)
        rewrite.cli.main()
    assert exit_.value.code == (f"NotADirectoryError: hydra.run.dir: cannot use {tmp_path}/some_file/run as output "
                                f"folder: {tmp_path}/some_file is a file")


def test_the_edit_file_records_the_request_read_from_a_file(tmp_path: Path) -> None:
    """`edit.file=ok.yaml` beside the default `edit=` group: the run and its edit file use the file's request."""
    path = _request_file(tmp_path, "ok.yaml", OK_REQUEST)
    rewrite_cli(tmp_path, "strategy=closed_form", "eval.tol=0.005", f"edit.file={path}")
    art = EditArtifact.load(tmp_path / "run" / EDIT_FILE)
    assert art.request == json.loads(json.dumps(EditRequest.load(path).to_dict()))
    assert art.request["name"] == "from_file" and art.request["paste"] == {"seed": 6, "box": [2, 2, 8, 6]}
