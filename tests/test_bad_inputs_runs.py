"""Run folders are data, not code; complete or absent. `rescore`, `sweep_table`, the benchmark and re-runs on
folders that are tampered with, killed, stale or corrupt, typed as a user types them (`python -m ...`, in this
process), each checking that nothing was lost: victim files, old metrics and the other jobs' rows are kept.

`CASES` has the format of `tests/test_bad_inputs.py` (whose README test reads it): name -> (exception type, or None
for a logged warning, message substring, trigger). Every trigger gets `tmp` holding `sweep/0_job`, a copy of one
real run of the tiny generator (made once per module), and pytest's `capsys`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import hydra._internal.logging_config as hydra_logging
import pytest
from omegaconf import OmegaConf

import rewrite.cli
from rewrite.bench import benchmark
from rewrite.bench.rescore import main as rescore
from rewrite.bench.sweep_table import main as sweep_table
from rewrite.editfile.artifact import EditArtifact
from rewrite.runner.runfolder import HISTORY_DIR, RUN_OVERRIDES
from tests.conftest import warns_and_goes_on

TINY = ["generator=tiny", "edit=tiny_box", "stats.num_samples=32", "stats.batch_size=16", "progress=false",
        "logger=none", "eval.perceptual=null"]
OUTPUTS = ("metrics.json", "config.yaml", "edit.safetensors", "grid.png")
Capsys = pytest.CaptureFixture[str]


def rewrite_run(folder: Path, *args: str) -> None:
    """`python -m rewrite <TINY> <args> hydra.run.dir=<folder>` as typed, in this process (HYDRA_FULL_ERROR=1: the
    job's error is raised, as `rewrite.cli.main` says it)."""
    argv = ["rewrite", *TINY, f"stats.cache_dir={folder.parent / 'cache'}", *args, f"hydra.run.dir={folder}"]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure = hydra_logging.configure_logging

    def keep_pytest_handlers(config: dict) -> None:  # Hydra replaces the root handlers; caplog's must stay
        configure(config)
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)

    try:
        with mock.patch.object(sys, "argv", argv), mock.patch.dict(os.environ, {"HYDRA_FULL_ERROR": "1"}), \
                mock.patch.object(hydra_logging, "configure_logging", keep_pytest_handlers):
            rewrite.cli.main()
    finally:
        root.handlers[:], root.level = handlers, level


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shared") / "sweep" / "0_job"
    rewrite_run(folder)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes: what must stay as it was."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _table_rows(capsys: Capsys) -> list[str]:
    """The data rows of the markdown table printed so far."""
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    return lines[2:]


def _second_job(tmp: Path) -> Path:
    """A second, complete job beside `0_job`: its row must survive whatever happens to the other."""
    shutil.copytree(tmp / "sweep" / "0_job", tmp / "sweep" / "1_job")
    return tmp / "sweep" / "1_job"


# --- rescore -------------------------------------------------------------------------------------------------------

def _edit_config(job: Path, key: str, value: object) -> None:
    cfg = OmegaConf.load(job / "config.yaml")
    OmegaConf.update(cfg, key, value, merge=False)
    OmegaConf.save(cfg, job / "config.yaml")


def _rescore_refused(tmp: Path, *args: str) -> None:
    """`python -m rewrite.bench.rescore <sweep> <args>` must refuse before writing anything anywhere."""
    before = _files(tmp)
    try:
        rescore([str(tmp / "sweep"), *args])
    finally:
        assert _files(tmp) == before  # metrics, edit file, config and victim files kept; no history, no temp file


def _foreign_target(tmp: Path, capsys: Capsys) -> None:
    (tmp / "victim.txt").write_text("precious")
    _edit_config(tmp / "sweep" / "0_job", "generator.model", {"_target_": "builtins.open",
                                                              "_args_": [str(tmp / "victim.txt"), "w"]})
    _rescore_refused(tmp)


def _foreign_target_in_a_list(tmp: Path, capsys: Capsys) -> None:
    (tmp / "victim.txt").write_text("precious")
    _edit_config(tmp / "sweep" / "0_job", "eval.scorers", {"mine": {"_target_": "rewrite.toyworld.requests.score."
                                                                    "toy_rule_scorer", "extra": [
        {"_target_": "shutil.rmtree", "path": str(tmp)}]}})
    _rescore_refused(tmp)


def _foreign_target_allowed(tmp: Path, capsys: Capsys) -> None:
    """--allow-target lets the user's own code through, and only that prefix (os.remove stays refused)."""
    (tmp / "victim.txt").write_text("precious")
    _edit_config(tmp / "sweep" / "0_job", "trainer", {"_target_": "os.remove", "path": str(tmp / "victim.txt")})
    _rescore_refused(tmp, "--allow-target", "my_models.")


def _interpolation(tmp: Path, capsys: Capsys) -> None:
    _edit_config(tmp / "sweep" / "0_job", "stats.cache_dir", "${oc.env:HOME}/.cache/elsewhere")
    _rescore_refused(tmp)


def _tampered_request(tmp: Path, capsys: Capsys) -> None:
    _edit_config(tmp / "sweep" / "0_job", "edit.paste.box", [2, 2, 8, 6])
    _rescore_refused(tmp)


def _another_runs_edit_file(tmp: Path, capsys: Capsys) -> None:
    """The edit file of a run made for another request, copied into this run's folder."""
    path = tmp / "sweep" / "0_job" / "edit.safetensors"
    art = EditArtifact.load(path)
    other = dict(art.request, name="tiny_other", paste={"seed": 7, "box": [2, 2, 8, 6]})
    dataclasses.replace(art, request=other).save(path)
    _rescore_refused(tmp)


def _config_is_a_list(tmp: Path, capsys: Capsys) -> None:
    (tmp / "sweep" / "0_job" / "config.yaml").write_text("- generator\n- edit\n")
    _rescore_refused(tmp)


def _stale_beside_fresh(tmp: Path, capsys: Capsys) -> None:
    """One job's re-run failed (new overrides, old metrics); the other is rescored, keeping its old metrics."""
    stale, fresh = tmp / "sweep" / "0_job", _second_job(tmp)
    (stale / ".hydra" / "overrides.yaml").write_text("- strategy=closed_form\n")
    before, old = _files(stale), (fresh / "metrics.json").read_bytes()
    rescore([str(tmp / "sweep")])
    assert _files(stale) == before
    assert (fresh / HISTORY_DIR / "001.json").read_bytes() == old  # the previous metrics are kept
    assert json.loads((fresh / "metrics.json").read_text())[RUN_OVERRIDES] == json.loads(old)[RUN_OVERRIDES]


def _nothing_complete(tmp: Path, capsys: Capsys) -> None:
    (tmp / "sweep" / "0_job" / "metrics.json").unlink()  # killed before its last file
    _rescore_refused(tmp)


# --- run folders: re-runs, kills ----------------------------------------------------------------------------------

def _rerun(tmp: Path, capsys: Capsys) -> None:
    """A re-run into a finished run folder (with a killed write's temp file) starts clean and ends complete."""
    job = tmp / "sweep" / "0_job"
    (job / ".metrics.json.k9x2.tmp.json").write_bytes(b"")
    (job / HISTORY_DIR).mkdir()
    (job / HISTORY_DIR / "001.json").write_text("{}")
    old = (job / "metrics.json").read_bytes()
    rewrite_run(job, "strategy=closed_form")
    assert not list(job.glob(".*.tmp*")) and not (job / HISTORY_DIR).exists()
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["strategy"] == "closed_form" and (job / "metrics.json").read_bytes() != old
    assert metrics[RUN_OVERRIDES] == OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
    for name in ("config.yaml", "grid.png", "edit.safetensors"):
        assert (job / name).stat().st_mtime_ns <= (job / "metrics.json").stat().st_mtime_ns, name  # metrics last


def _failed_rerun(tmp: Path, capsys: Capsys) -> None:
    """A re-run with a refused setting keeps the earlier run's files; the table skips them as stale."""
    job = tmp / "sweep" / "0_job"
    _second_job(tmp)
    before = {name: (job / name).read_bytes() for name in OUTPUTS}
    with pytest.raises(ValueError, match="eval.tol"):
        rewrite_run(job, "eval.tol=2")
    assert {name: (job / name).read_bytes() for name in OUTPUTS} == before
    sweep_table([str(tmp / "sweep")])
    assert len(_table_rows(capsys)) == 1  # the other job's row


def _killed_run(tmp: Path, capsys: Capsys) -> None:
    """Killed while writing: every file but the last (metrics.json), and the temp file of that write."""
    job = tmp / "sweep" / "0_job"
    _second_job(tmp)
    (job / "metrics.json").rename(job / ".metrics.json.k9x2.tmp.json")
    sweep_table([str(tmp / "sweep")])
    assert len(_table_rows(capsys)) == 1


def _killed_old_run(tmp: Path, capsys: Capsys) -> None:
    """A folder of the earlier layout (metrics.json first, no overrides record) killed before its last files."""
    job = tmp / "sweep" / "0_job"
    _second_job(tmp)
    metrics = json.loads((job / "metrics.json").read_text())
    del metrics[RUN_OVERRIDES]
    (job / "metrics.json").write_text(json.dumps(metrics))
    for name in ("config.yaml", "edit.safetensors"):
        (job / name).unlink()
    (job / ".edit.safetensors.k9x2.tmp.safetensors").write_bytes(b"")
    sweep_table([str(tmp / "sweep")])
    assert len(_table_rows(capsys)) == 1


# --- sweep_table ------------------------------------------------------------------------------------------------------

def _corrupt_metrics(content: str) -> Callable[[Path, Capsys], None]:
    def trigger(tmp: Path, capsys: Capsys) -> None:
        _second_job(tmp)
        (tmp / "sweep" / "0_job" / "metrics.json").write_text(content)
        sweep_table([str(tmp / "sweep")])
        assert len(_table_rows(capsys)) == 1  # the table, less that job

    return trigger


def _table_refused(tmp: Path, capsys: Capsys, *args: str) -> None:
    try:
        sweep_table([str(tmp / "sweep"), *args])
    finally:
        assert capsys.readouterr().out == ""  # refused before the table is printed


def _csv_into_missing_folder(tmp: Path, capsys: Capsys) -> None:
    try:
        _table_refused(tmp, capsys, "--csv", str(tmp / "tables" / "t.csv"))
    finally:
        assert not (tmp / "tables").exists()


def _csv_under_a_file(tmp: Path, capsys: Capsys) -> None:
    (tmp / "notes").write_text("kept")
    try:
        _table_refused(tmp, capsys, "--csv", str(tmp / "notes" / "t.csv"))
    finally:
        assert (tmp / "notes").read_text() == "kept"


def _no_complete_job(tmp: Path, capsys: Capsys) -> None:
    (tmp / "sweep" / "0_job" / "metrics.json").write_text("[]")
    _table_refused(tmp, capsys)


# --- benchmark -------------------------------------------------------------------------------------------------------

def _benchmark_out_is_a_file(tmp: Path, capsys: Capsys) -> None:
    (tmp / "results.md").write_text("kept")
    try:
        benchmark.main(["toy_add_tree", "--out", str(tmp / "results.md")])
    finally:
        assert (tmp / "results.md").read_text() == "kept"


def _benchmark_bad_budget(tmp: Path, capsys: Capsys) -> None:
    try:
        benchmark.main(["toy_add_tree", "--out", str(tmp / "out"), "--min-specificity", "95"])
    finally:
        assert not (tmp / "out" / "commands.txt").exists()  # refused before any work


def _benchmark_bad_search(tmp: Path, capsys: Capsys) -> None:
    try:
        benchmark.main(["toy_add_tree", "--out", str(tmp / "out"), "--search", "strategy.memory_weight"])
    finally:
        assert not (tmp / "out" / "commands.txt").exists()


def _benchmark_stale_test_run(tmp: Path, capsys: Capsys) -> None:
    """The benchmark's test run of a choice, whose re-run with a new choice failed: not reused."""
    job = tmp / "sweep" / "0_job"
    (job / ".hydra" / "overrides.yaml").write_text("- strategy=closed_form\n")
    assert not benchmark.ran_with(job, ["strategy=closed_form"])


CASES: dict[str, tuple[type[BaseException] | None, str, Callable[..., object]]] = {
    "rescore_foreign_target": (SystemExit, "generator.model._target_ names 'builtins.open', which is not one of "
                               "the package's own targets", _foreign_target),
    "rescore_foreign_target_in_a_list": (SystemExit, "eval.scorers.mine.extra[0]._target_ names 'shutil.rmtree'",
                                         _foreign_target_in_a_list),
    "rescore_target_outside_allowed_prefix": (SystemExit, "pass --allow-target PREFIX to allow your own code",
                                              _foreign_target_allowed),
    "rescore_config_interpolation": (SystemExit, "is an interpolation ('${oc.env:HOME}/.cache/elsewhere'); a run "
                                     "saves its config resolved", _interpolation),
    "rescore_tampered_request": (SystemExit, "refusing to score an edit for a request it was not made for",
                                 _tampered_request),
    "rescore_another_runs_edit_file": (SystemExit, "was made for 'tiny_other' (they differ in name, paste)",
                                       _another_runs_edit_file),
    "rescore_config_not_a_mapping": (SystemExit, "holds a list, not a run config", _config_is_a_list),
    "rescore_stale_job_folder": (None, "skipped 1 incomplete run folder(s)", _stale_beside_fresh),
    "rescore_nothing_complete": (SystemExit, "no finished runs (complete folders with metrics.json and "
                                 "edit.safetensors)", _nothing_complete),
    "rerun_into_a_run_folder": (None, "a previous run's files are here; removing them before this run writes its own",
                                _rerun),
    "failed_rerun_into_a_job_folder": (None, "stale: metrics.json was written for overrides", _failed_rerun),
    "run_killed_while_writing": (None, "(no metrics.json: failed, killed or still running)", _killed_run),
    "old_run_killed_while_writing": (None, "metrics.json without config.yaml: killed while writing its files",
                                     _killed_old_run),
    "sweep_table_truncated_metrics": (None, "unreadable metrics.json (", _corrupt_metrics('{"edit_score": 0.')),
    "sweep_table_list_metrics": (None, "metrics.json holds a JSON list, not an object of metrics",
                                 _corrupt_metrics("[0.5, 0.9]")),
    "sweep_table_csv_into_missing_folder": (SystemExit, "does not exist (create it first)", _csv_into_missing_folder),
    "sweep_table_csv_under_a_file": (SystemExit, "is a file, not a folder", _csv_under_a_file),
    "sweep_table_no_complete_job": (SystemExit, "no complete job folder in", _no_complete_job),
    "benchmark_out_is_a_file": (SystemExit, "--out: cannot use", _benchmark_out_is_a_file),
    "benchmark_specificity_budget_as_percent": (SystemExit, "--min-specificity must be in (0, 1], got 95.0",
                                                _benchmark_bad_budget),
    "benchmark_search_without_values": (SystemExit, "--search takes KEY=V1,V2", _benchmark_bad_search),
    "benchmark_stale_test_run": (None, "not reused (stale: metrics.json was written for overrides",
                                 _benchmark_stale_test_run),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_run_folder_input_gets_its_error(case: str, shared_run: Path, tmp_path: Path, capsys: Capsys,
                                             caplog: pytest.LogCaptureFixture) -> None:
    exc, message, trigger = CASES[case]
    shutil.copytree(shared_run, tmp_path / "sweep" / "0_job")
    if exc is None:  # not an error: a logged warning, and the work goes on
        warns_and_goes_on(caplog, message, lambda: trigger(tmp_path, capsys))
        return
    with pytest.raises(exc, match=re.escape(message)):
        trigger(tmp_path, capsys)
