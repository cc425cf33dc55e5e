"""rewrite.bench.benchmark's choices on hand-made validation folders (the runs themselves are real Hydra
multiruns, exercised in test_run)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rewrite.bench import benchmark as rule_benchmark
from rewrite.runner.runfolder import RUN_OVERRIDES


def _job(root: Path, name: str, overrides: list[str], metrics: dict) -> Path:
    """A job folder as a finished run leaves it: its overrides, and metrics.json recording them."""
    (root / name / ".hydra").mkdir(parents=True)
    (root / name / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (root / name / "metrics.json").write_text(json.dumps({**metrics, RUN_OVERRIDES: overrides}))
    return root / name


def test_choose_takes_the_best_edit_score_then_the_faster_job(tmp_path: Path) -> None:
    common = ["+experiment=search_toy_rank_one", "split=validation", "torch_threads=1"]
    _job(tmp_path, "0_a", [*common, "generator.layer=convs.3", "strategy.memory_weight=0"],
         {"edit_score": 0.5, "edit_time_s": 1.0})
    _job(tmp_path, "1_b", [*common, "generator.layer=convs.3", "strategy.memory_weight=20"],
         {"edit_score": 0.8, "edit_time_s": 2.0})
    _job(tmp_path, "2_c", [*common, "generator.layer=convs.4", "strategy.memory_weight=20"],
         {"edit_score": 0.8, "edit_time_s": 1.5})
    _job(tmp_path, "3_d", [*common, "generator.layer=convs.4", "strategy.memory_weight=30"],
         {"edit_score": float("nan"), "edit_time_s": 0.1})
    overrides, best = rule_benchmark.choose(tmp_path)
    assert overrides == {"generator.layer": "convs.4", "strategy.memory_weight": "20"}  # the swept settings only
    assert best["edit_time_s"] == 1.5


def test_choose_averages_a_setting_over_its_copy_paste_examples(tmp_path: Path) -> None:
    """One lucky pair (0.9) must not beat a setting that is good on every pair (0.6, 0.6, 0.6)."""
    for i, (mw, example, score) in enumerate([(0, 0, 0.9), (0, 1, 0.1), (0, 2, 0.2),
                                               (1, 0, 0.6), (1, 1, 0.6), (1, 2, 0.6)]):
        _job(tmp_path, f"{i}_j", ["split=validation", f"strategy.memory_weight={mw}", f"edit.example={example}",
                                  *rule_benchmark.VALIDATION_ONLY],
             {"edit_score": score, "edit_time_s": 1.0})
    overrides, best = rule_benchmark.choose(tmp_path)
    assert overrides == {"strategy.memory_weight": "1"}  # the example is not part of the choice
    assert best["examples"] == 3 and abs(best["edit_score"] - 0.6) < 1e-12


def test_a_test_run_is_reused_only_for_the_same_choice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = _job(tmp_path, "0_rank_one", ["+experiment=x", "generator.layer=convs.3", "split=test"], {"edit_score": 1})
    assert rule_benchmark.ran_with(run, ["generator.layer=convs.3"])
    assert not rule_benchmark.ran_with(run, ["generator.layer=convs.4"])
    assert not rule_benchmark.ran_with(tmp_path / "never_ran", ["generator.layer=convs.3"])
    # A re-run with the choice that failed: the new overrides beside the old metrics are not reused.
    (run / ".hydra" / "overrides.yaml").write_text("- generator.layer=convs.5\n")
    with caplog.at_level(logging.WARNING):
        assert not rule_benchmark.ran_with(run, ["generator.layer=convs.5"])
    assert "not reused (stale: metrics.json was written for overrides" in caplog.text


def test_choose_skips_and_lists_incomplete_jobs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _job(tmp_path, "0_a", ["strategy.memory_weight=0"], {"edit_score": 0.5, "edit_time_s": 1.0})
    killed = _job(tmp_path, "1_b", ["strategy.memory_weight=20"], {"edit_score": 0.9, "edit_time_s": 1.0})
    (killed / "metrics.json").unlink()
    (tmp_path / "multirun.yaml").write_text("{}\n")
    with caplog.at_level(logging.WARNING):
        assert not rule_benchmark.complete(tmp_path)
        assert rule_benchmark.choose(tmp_path)[0] == {"strategy.memory_weight": "0"}
    assert caplog.text.count("skipped 1 incomplete job folder(s): 1_b (no metrics.json") == 2


def test_out_naming_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "results.md").write_text("kept")
    with pytest.raises(SystemExit, match="--out: cannot use .* as output folder: .*results.md is a file"):
        rule_benchmark.main(["toy_add_tree", "--out", str(tmp_path / "results.md")])
    assert (tmp_path / "results.md").read_text() == "kept" and list(tmp_path.iterdir()) == [tmp_path / "results.md"]


def test_unknown_family_is_refused() -> None:
    with pytest.raises(SystemExit, match="no search space"):
        rule_benchmark.family("tiny_box")


def test_the_table_gives_the_edit_score_range_over_examples(tmp_path: Path) -> None:
    metrics = {"efficacy": 0.5, "edit_time_s": 1.0}
    for key, value in (("generality", 0.4), ("specificity", 0.9), ("edit_score", 0.6)):
        metrics.update({key: value, f"{key}_ci_low": value - 0.1, f"{key}_ci_high": value + 0.1})
    _job(tmp_path / "test", "0_rank_one", [], metrics)
    for k, score in ((1, 0.2), (2, 0.7)):
        _job(tmp_path / "examples" / "0_rank_one", str(k), [], {**metrics, "edit_score": score})
    chosen = {"rank_one": {"overrides": {"generator.layer": "convs.3"}}}
    one = rule_benchmark.summary(tmp_path, ["rank_one"], chosen)
    assert "examples" not in one and one.splitlines()[-1].endswith("| 1 |")
    three = rule_benchmark.summary(tmp_path, ["rank_one"], chosen, examples=3)
    assert "3 examples" in three.splitlines()[0]
    assert three.splitlines()[-1].endswith("| 0.50 [0.20, 0.70] |")  # mean of 0.6, 0.2, 0.7


def test_examples_need_an_edit_with_an_example_setting(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no `example` setting"):
        rule_benchmark.main(["face_eyeglasses", "--out", str(tmp_path), "--examples", "3"])
    with pytest.raises(SystemExit, match="must be ≥ 1"):
        rule_benchmark.main(["toy_add_tree", "--out", str(tmp_path), "--examples", "0"])


def _first_command(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> list[str]:
    """The command line of the benchmark's first run (the first validation multirun), recorded, not run."""
    commands: list[list[str]] = []

    class Stop(Exception):
        pass

    def record(cmd: list[str], log: Path) -> None:
        commands.append(cmd)
        raise Stop

    monkeypatch.setattr(rule_benchmark, "run", record)
    with pytest.raises(Stop):
        rule_benchmark.main(args)
    return commands[0]


def test_launcher_goes_to_the_multiruns_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--launcher cores` puts `hydra/launcher=cores` on every validation multirun."""
    cmd = _first_command(monkeypatch, ["toy_add_tree", "--out", str(tmp_path / "b"), "--strategies", "rank_one",
                                       "--launcher", "cores"])
    assert "-m" in cmd and "hydra/launcher=cores" in cmd


def test_sweeper_optuna_makes_the_validation_multirun_a_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--sweeper optuna --trials 3` runs a seeded study over the grid's space in val_optuna/."""
    cmd = _first_command(monkeypatch, ["toy_add_tree", "--out", str(tmp_path / "b"), "--strategies", "rank_one",
                                       "--sweeper", "optuna", "--trials", "3"])
    assert "hydra/sweeper=optuna_tpe" in cmd and "hydra.sweeper.n_trials=3" in cmd
    assert f"hydra.sweep.dir={tmp_path / 'b' / 'val_optuna' / 'rank_one'}" in cmd
    for bad in (["--trials", "3"], ["--sweeper", "optuna", "--trials", "0"],
                ["--sweeper", "optuna", "--choose-examples", "3"]):
        with pytest.raises(SystemExit, match="--trials|--sweeper optuna"):
            rule_benchmark.main(["toy_add_tree", "--out", str(tmp_path / "c"), *bad])


def test_test_settings_compose_to_the_chosen_setting(tmp_path: Path) -> None:
    """The settings file of a choice, composed as the test multirun composes it, gives the chosen values and the
    strategy's own config; a run folder whose saved config holds other values is not reused."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from rewrite.pipeline import CONF_DIR

    chosen = {"rank_one": {"overrides": {"generator.layer": "convs.5", "strategy.key_method": "zca",
                                         "strategy.memory_weight": "5"}},
              "projected_adam": {"overrides": {"generator.layer": "convs.5", "strategy.lr": "0.005"}}}
    settings = rule_benchmark.write_test_settings(tmp_path, "toy", ["rank_one", "projected_adam"], chosen)
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["edit=toy_add_tree", "+bench_test=1_projected_adam",
                                           f"hydra.searchpath=[file://{settings}]"])
        one = compose("config", overrides=["edit=toy_add_tree", "+bench_test=0_rank_one",
                                           f"hydra.searchpath=[file://{settings}]"])
    assert cfg.generator.layer == "convs.5" and cfg.strategy.lr == 0.005 and "projected" in cfg.strategy._target_
    assert one.strategy.memory_weight == 5 and one.strategy.key_method == "zca" and one.generator.model is not None
    assert "sweeper" not in (settings / "bench_test" / "0_rank_one.yaml").read_text()  # the search's sweep is left out
    run = tmp_path / "run"
    run.mkdir()
    OmegaConf.save(one, run / "config.yaml")
    assert rule_benchmark.ran_choice(run, chosen["rank_one"]["overrides"])
    assert not rule_benchmark.ran_choice(run, {**chosen["rank_one"]["overrides"], "strategy.memory_weight": "1"})
    assert not rule_benchmark.ran_choice(tmp_path / "never_ran", chosen["rank_one"]["overrides"])


def test_choose_with_a_specificity_budget_takes_the_most_general_setting_that_keeps_it(tmp_path: Path) -> None:
    """(generality, specificity) per setting, two examples each: the best product (mw 0) keeps too little; of the
    settings that keep 0.95 on average, mw 20 carries the rule furthest; mw 50 keeps more but carries less."""
    runs = {0: [(0.9, 0.90), (0.9, 0.92)], 20: [(0.7, 0.96), (0.6, 0.95)], 50: [(0.4, 0.99), (0.4, 0.99)],
            5: [(0.95, 0.99), (0.8, 0.90)]}  # mw 5: one example keeps 0.99, the mean (0.945) misses the budget
    for mw, pairs in runs.items():
        for example, (g, s) in enumerate(pairs):
            _job(tmp_path, f"{mw}_{example}", ["split=validation", f"strategy.memory_weight={mw}",
                                               f"edit.example={example}"],
                 {"generality": g, "specificity": s, "edit_score": (g * s) ** 0.5, "edit_time_s": 1.0})
    assert rule_benchmark.choose(tmp_path)[0] == {"strategy.memory_weight": "5"}
    overrides, best = rule_benchmark.choose(tmp_path, min_specificity=0.95)
    assert overrides == {"strategy.memory_weight": "20"}
    assert best["generality"] == pytest.approx(0.65) and best["specificity"] == pytest.approx(0.955)
    with pytest.raises(rule_benchmark.BudgetUnmet, match=r"of 0.999 or more \(the most specific keeps 0.990\)"):
        rule_benchmark.choose(tmp_path, min_specificity=0.999)
