"""Real Hydra composition, real `python -m rewrite` runs and a real multirun on the tiny generator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file

from rewrite.editfile.artifact import EditArtifact
from rewrite.generators.tiny import load_tiny
from rewrite.pipeline import CONF_DIR, load_request

ROOT = Path(__file__).resolve().parent.parent
GROUPS = {g: sorted(p.stem for p in (Path(CONF_DIR) / g).glob("*.yaml"))
          for g in ("generator", "strategy", "edit", "logger", "trainer")}
TINY = ["generator=tiny", "edit=tiny_box", "stats.num_samples=32", "stats.batch_size=16", "progress=false",
        "eval.tol=0.005"]  # the random tiny generator draws in [-0.12, 0.16]: a fine colour tolerance


@pytest.mark.parametrize("strategy", GROUPS["strategy"])
@pytest.mark.parametrize("group", ["generator", "edit", "logger", "trainer"])
def test_every_config_composes(strategy: str, group: str) -> None:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        for option in GROUPS[group]:
            cfg = compose("config", overrides=[f"strategy={strategy}", f"{group}={option}"], return_hydra_config=False)
            assert instantiate(cfg.strategy).cfg is not None
            if group == "edit":
                assert load_request(cfg.edit).name


def rewrite_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "rewrite", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


def test_cli_run_writes_everything(tmp_path: Path) -> None:
    proc = rewrite_cli([*TINY, "strategy=closed_form", "logger=csv", f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("value_loss", "value_loss_before", "heldout_collateral_l1", "target_outside_l1", "edit_time_s",
                "stats_time_s", "efficacy", "generality", "specificity", "edit_score", "generality_ci_low",
                "generality_ci_high", "key_selectivity", "paste_goal_generality_value"):
        assert isinstance(metrics[key], float), key
    for key in ("efficacy", "generality", "specificity", "edit_score"):
        assert 0 <= metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"] <= 1, key
    assert metrics["score_source"] == "paste_goal" and metrics["n_heldout"] == 2
    assert 0 <= metrics["ceiling_efficacy"] <= 1 and metrics["n_ceiling_heldout"] == 2  # both held-out boxes fit
    assert metrics["value_loss"] < metrics["value_loss_before"]
    # the log ends with the short summary, not the raw dict
    log = proc.stdout + proc.stderr
    assert "ceiling" in log and f"grid: {run / 'grid.png'}" in log and "'value_loss'" not in log
    assert any(k.endswith("effnet_lite0_feature_distance") or "lpips" in k for k in metrics)
    assert (run / "grid.png").stat().st_size > 0 and (run / "config.yaml").is_file()
    art = EditArtifact.load(run / "edit.safetensors")  # the edit file, always written: factors, not the model
    assert art.kind == "low_rank" and art.layer == "main.4.weight" and art.delta().directions.shape == (16, 1)
    assert art.strategy["name"] == "closed_form" and art.request["name"] == "tiny_box"
    assert not (run / "edited_weights.safetensors").exists()  # the full state dict only on request
    assert (run / "csv").is_dir()
    # Determinism: the same config and seed give the same edited weights; the full file equals base + edit.
    again = rewrite_cli([*TINY, "strategy=closed_form", "logger=none", "save_full_weights=true",
                         f"hydra.run.dir={tmp_path}/again"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    edited = load_file(str(tmp_path / "again" / "edited_weights.safetensors"))
    base = load_tiny().model.state_dict()
    assert torch.equal(art.new_values(base)["main.4.weight"], edited["main.4.weight"])
    assert all(torch.equal(base[k], edited[k]) for k in base if k != "main.4.weight")


def test_bad_request_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    proc = rewrite_cli([*TINY, "logger=none", "edit.copy.box=[3,3,3,9]", f"hydra.run.dir={tmp_path}/bad"], tmp_path)
    assert proc.returncode != 0
    assert "box [3, 3, 3, 9] is empty" in proc.stderr
    assert not (tmp_path / "bad" / "metrics.json").exists()
    assert not (tmp_path / "bad" / "edit.safetensors").exists()
    proc = rewrite_cli([*TINY, "logger=none", "generator.layer=main.5", f"hydra.run.dir={tmp_path}/bad2"], tmp_path)
    assert proc.returncode != 0 and "supported layer types" in proc.stderr


def test_multirun_one_wandb_run_per_job(tmp_path: Path) -> None:
    proc = rewrite_cli(["-m", *TINY, "strategy=closed_form,rank_one,layer_finetune", "strategy.steps=5",
                        "logger=wandb", f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    # strategy.steps does not exist for closed_form: Hydra must refuse it before running anything.
    assert proc.returncode != 0
    assert "steps" in proc.stderr and not list(tmp_path.rglob("metrics.json"))
    proc = rewrite_cli(["-m", *TINY, "strategy=closed_form,rank_one,low_rank", "logger=wandb",
                        f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and (p / "metrics.json").exists())
    assert len(jobs) == 3
    assert {json.loads((j / "metrics.json").read_text())["strategy"] for j in jobs} == {"closed_form", "rank_one",
                                                                                        "low_rank"}
    for job in jobs:
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, job
    # The sweep reads back as one table: the varying override is a column, one row per job.
    table = subprocess.run([sys.executable, "-m", "rewrite.bench.sweep_table", str(tmp_path / "sweep"), "--metrics",
                            "value_loss,edit_time_s"], capture_output=True, text=True, check=True).stdout
    lines = table.strip().splitlines()
    assert lines[0] == "| strategy | value_loss | edit_time_s |" and len(lines) == 2 + 3
    assert {ln.split("|")[1].strip() for ln in lines[2:]} == {"closed_form", "rank_one", "low_rank"}


def test_toy_benchmark_experiment_runs_as_a_multirun(tmp_path: Path) -> None:
    # The experiment config sweeps 4 rules x 6 strategies; command-line values narrow it to one job here.
    proc = rewrite_cli(["-m", "+experiment=toy_benchmark", "edit=toy_dome_to_spire", "strategy=closed_form",
                        "stats.num_samples=48", "stats.batch_size=16", "eval.scorers.toy_ideal.untouched=2",
                        "progress=false",
                        f"stats.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = [p.parent for p in (tmp_path / "sweep").glob("*/metrics.json")]
    cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
    assert cfg.generator.model._target_.endswith("load_toy_stylegan2")
    m = json.loads((job / "metrics.json").read_text())
    assert m["score_source"] == "toy_ideal" and m["n_heldout"] == 32 and m["n_untouched"] == 2
    assert 0 < m["generality"] < 1 and 0 < m["specificity"] <= 1 and m["toy_source_recall_before"] > 0.1
    assert 0 < m["specificity_pixels"] <= 1 and f"specificity_class_{m['specificity_worst_class_name']}" in m
    assert m["specificity_worst_class"] == min(v for k, v in m.items() if k.startswith("specificity_class_"))
    assert 0 <= m["ceiling_efficacy"] <= 1 and m["n_ceiling_heldout"] >= 1
    assert list((job / "csv").rglob("metrics.csv"))  # the experiment logs to CSV


def test_generator_tuned_settings_are_the_strategy_defaults_and_yield_to_the_command_line() -> None:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["generator=dcgan_face"])
        tuned = cfg.generator.tuned.rank_one
        s = instantiate(cfg.strategy)
        assert (s.cfg.key_method, s.cfg.memory_weight) == (tuned.key_method, tuned.memory_weight)
        s = instantiate(compose("config", overrides=["generator=dcgan_face", "strategy.key_method=svd"]).strategy)
        assert s.cfg.key_method == "svd"
        s = instantiate(compose("config", overrides=["generator=tiny", "strategy=low_rank"]).strategy)
        assert (s.cfg.key_method, s.cfg.rank, s.cfg.memory_weight) == ("zca", 4, 0.0)  # no tuned block: defaults


@pytest.mark.parametrize("generator", ["toy_stylegan2", "dcgan_face"])
def test_generator_tuned_settings_are_the_benchmark_choices(generator: str) -> None:
    """The tuned section is what `python -m rewrite.bench.benchmark --tune` wrote from the chosen.json it names."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"generator={generator}"])
    chosen = json.loads((Path(__file__).parents[1] / cfg.generator.tuned_from).read_text())
    assert cfg.generator.layer == chosen["rank_one"]["overrides"]["generator.layer"]
    for name, tuned in cfg.generator.tuned.items():
        picked = chosen[name]["overrides"]
        assert tuned.key_method == picked["strategy.key_method"], name
        assert tuned.memory_weight == float(picked["strategy.memory_weight"]), name
    s = instantiate(cfg.strategy)
    assert (s.cfg.key_method, s.cfg.memory_weight) == (cfg.generator.tuned.rank_one.key_method,
                                                       cfg.generator.tuned.rank_one.memory_weight)


def test_the_benchmark_writes_the_tuned_section(tmp_path: Path) -> None:
    from rewrite.bench.benchmark import TUNED_MARK, tuned_block, write_tuned

    yaml = tmp_path / "g.yaml"
    yaml.write_text(f"model: {{}}\n{TUNED_MARK}\nlayer: old\ntuned: {{}}\n")
    chosen = {"rank_one": {"overrides": {"generator.layer": "convs.5", "strategy.key_method": "mean",
                                         "strategy.memory_weight": "5"}},
              "full_finetune": {"overrides": {"strategy.lr": "0.001"}}}
    write_tuned(yaml, tuned_block("toy_x", Path("results/toy_x"), chosen))
    cfg = OmegaConf.load(yaml)
    assert cfg.layer == "convs.5" and cfg.tuned_from == "results/toy_x/chosen.json" and "model" in cfg
    assert OmegaConf.to_container(cfg.tuned) == {"rank_one": {"key_method": "mean", "memory_weight": 5.0}}
    (tmp_path / "hand.yaml").write_text("a: 1\n")
    with pytest.raises(SystemExit, match="no line"):
        write_tuned(tmp_path / "hand.yaml", "x")
