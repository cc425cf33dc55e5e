"""Every strategy on one rule, settings chosen on validation seeds and reported on test seeds.

    python -m rewrite.bench.benchmark toy_dome_to_spire --out results/toy_dome_to_spire
    python -m rewrite.bench.benchmark face_eyeglasses --out results/face_eyeglasses

(`experiments/rule_benchmark.py` is the same entry point.)

1. For each strategy a Hydra multirun over its search space (`conf/experiment/search_<family>_<strategy>.yaml`:
   layer × key method × rank × context size × regularization weight, or lr for the fine-tunes) is
   scored on the validation held-out seeds (`split=validation`): `<out>/val/<strategy>/`.
2. Per strategy the setting with the highest `edit_score` is chosen (ties: the faster one); with
   `--choose-examples N` (toy rules) every setting runs with the copy/paste pairs 0 … N−1 and is scored by
   its mean over them, since one pair can move a setting's edit_score a lot.
3. Each chosen setting runs again on the test seeds (`split=test`, held-out seeds never used to choose):
   `<out>/test/<n>_<strategy>/`, all in one multirun (the settings are written as a config group,
   `<out>/test_settings/bench_test/<n>_<strategy>.yaml`), so the jobs share the unedited model's snapshots and,
   with `--launcher`, the cores.
4. With `--examples N` (toy rules, whose requests have an `example` knob), each chosen setting runs
   again on the test seeds with the copy/paste pairs 1 … N−1 (`<out>/examples/<n>_<strategy>/<k>/`): how
   much a result depends on the one example it was given.
5. `<out>/table.md` (the README's table: each strategy's chosen setting and its test scores with
   95% intervals, FID against the unedited model over `--fid-samples` samples (default 200; 0 leaves it out),
   and with `--examples` the edit_score's mean and range over the N examples);
   `python -m rewrite.bench.sweep_table` adds `<out>/test.csv` and the Pareto plot
   `<out>/pareto.png`; `<out>/chosen.json` records the choices and `<out>/commands.txt` every
   command that ran. Phases whose folders are complete are skipped, so an interrupted benchmark
   resumes; after `python -m rewrite.bench.rescore <out>/val` (new metrics, same edits) a rerun re-chooses
   and runs again only the test runs whose choice changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from rewrite.bench.optuna_search import RESULTS as OPTUNA_RESULTS
from rewrite.bench.optuna_search import grid_size, optuna_overrides
from rewrite.bench.sweep_table import load_sweep
from rewrite.core.files import atomic_write, check_writable_dir
from rewrite.pipeline import CONF_DIR
from rewrite.runner.runfolder import IncompleteRun, read_run, skipped_message

STRATEGIES = ("rank_one", "low_rank", "closed_form", "projected_adam", "layer_finetune", "full_finetune")
COMMON = ["logger=csv", "progress=false", "torch_threads=1"]
EXPERIMENTS = Path(CONF_DIR) / "experiment"
VALIDATION_ONLY = ["eval.perceptual=null", "eval.fid.samples=0"]  # diagnostics no choice reads; test runs report them
FID_SAMPLES = 200  # --fid-samples default: FID / KID of each test run over this many unedited and edited samples

logger = logging.getLogger(__name__)


def family(edit: str) -> str:
    if edit.startswith("toy_"):
        return "toy"
    if edit.startswith("face_"):
        return "face"
    raise SystemExit(f"no search space for edit {edit!r}: expected a toy_* or face_* edit config")


def run(cmd: list[str], log: Path) -> None:
    with log.open("a") as f:
        f.write(" ".join(cmd) + "\n")
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")


def complete(folder: Path) -> bool:
    """A multirun folder whose every job is complete and fresh (so the phase can be skipped); the others are
    listed, and the phase runs again."""
    if not (folder / "multirun.yaml").is_file():
        return False
    try:
        skipped = load_sweep(folder).skipped
    except ValueError:
        return False
    if skipped:
        logger.warning("%s: %s; running the phase again", folder, skipped_message(skipped))
    return not skipped


def ran_with(folder: Path, overrides: list[str]) -> bool:
    """Whether a run folder holds a complete, fresh run made with these overrides (else it runs again: a changed
    choice, or a run that failed, was killed or left stale metrics). Why it is not reusable is logged."""
    try:
        ran, _ = read_run(folder)
    except IncompleteRun as e:
        if folder.exists():
            logger.warning("%s: not reused (%s); running it again", folder, e)
        return False
    return set(overrides) <= set(ran or [])


TEST_GROUP = "bench_test"  # config group of the chosen settings, one option per strategy: <out>/test_settings/


def write_test_settings(out: Path, fam: str, names: list[str], chosen: dict[str, dict[str, object]]) -> Path:
    """`<out>/test_settings/bench_test/<n>_<strategy>.yaml`: each strategy's search experiment without its sweep,
    with the chosen setting filled in, so that all test runs are one multirun (`+bench_test=0_rank_one,…`)."""
    folder = out / "test_settings" / TEST_GROUP
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        experiment = OmegaConf.load(EXPERIMENTS / f"search_{fam}_{name}.yaml")
        experiment.pop("hydra", None)  # its sweep over the search space
        ov = [f"{k}={v}" for k, v in chosen[name]["overrides"].items()]  # type: ignore[union-attr]
        settings = OmegaConf.merge(experiment, OmegaConf.from_dotlist(ov))
        text = (f"# @package _global_\n# {name}'s setting chosen on the validation seeds by "
                f"python -m rewrite.bench.benchmark: {' '.join(ov)}\n" + OmegaConf.to_yaml(settings))
        atomic_write(folder / f"{i}_{name}.yaml", lambda tmp, text=text: tmp.write_text(text))
    return folder.parent


def ran_choice(folder: Path, choice: dict[str, str]) -> bool:
    """Whether the run folder's saved config holds the chosen values (a test run made for another choice runs
    again; its overrides name only the settings file)."""
    try:
        cfg = OmegaConf.load(folder / "config.yaml")
    except (OSError, ValueError):
        return False

    def same(a: object, b: str) -> bool:
        try:
            return float(a) == float(b)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(a) == b

    return all(same(OmegaConf.select(cfg, k), str(v)) for k, v in choice.items())


EXAMPLE = "edit.example"  # the copy/paste pair a toy request uses; choices average over it
NOT_CHOSEN = {EXAMPLE, *(o.split("=", 1)[0] for o in VALIDATION_ONLY)}  # overrides that are not a setting


class BudgetUnmet(Exception):
    """No setting of a search keeps the asked specificity budget on the validation seeds."""


def choose(folder: Path, min_specificity: float | None = None) -> tuple[dict[str, str], dict[str, object]]:
    """The validation setting with the highest edit_score (ties: least edit time): its overrides and scores.

    A setting that ran with several copy/paste examples (`edit.example` swept) is scored by the mean over its
    examples, so one lucky pair cannot choose it; the returned scores are those means. With `min_specificity`,
    the setting with the highest mean generality among those whose mean specificity reaches it: the point of the
    Pareto front a user asks for ("as general as possible, keeping 95% of every part"), not the best product.
    """
    sweep = load_sweep(folder)
    if sweep.skipped:
        logger.warning("%s: %s", folder, skipped_message(sweep.skipped))
    groups: dict[tuple[tuple[str, str], ...], list[dict[str, object]]] = {}
    for r in sweep.rows:
        setting = tuple(sorted((k, str(v)) for k, v in r.items() if "." in k and k not in NOT_CHOSEN))
        groups.setdefault(setting, []).append(r)

    def mean(rows: list[dict[str, object]], key: str) -> float:
        values = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]  # type: ignore[arg-type]
        return sum(values) / len(values) if values and all(v == v for v in values) else float("nan")

    ranked = "edit_score" if min_specificity is None else "generality"
    scored = {k: {"edit_score": mean(rows, "edit_score"), "edit_time_s": mean(rows, "edit_time_s"),
                  "examples": len(rows)} for k, rows in groups.items()}
    if min_specificity is not None:
        for k, rows in groups.items():
            scored[k].update(generality=mean(rows, "generality"), specificity=mean(rows, "specificity"))
        most = max((v["specificity"] for v in scored.values() if v["specificity"] == v["specificity"]), default=None)
        scored = {k: v for k, v in scored.items() if v["specificity"] >= min_specificity}  # NaN fails too
        if most is not None and not scored:
            raise BudgetUnmet(f"no setting keeps a mean specificity of {min_specificity} or more (the most "
                              f"specific keeps {most:.3f})")
    scored = {k: v for k, v in scored.items() if v[ranked] == v[ranked]}
    if not scored:
        raise SystemExit(f"no scored job in {folder}")
    best = max(scored, key=lambda k: (scored[k][ranked], -scored[k]["edit_time_s"]))
    return dict(best), scored[best]


TUNED_MARK = "# --- tuned: written by python -m rewrite.bench.benchmark --tune (do not edit by hand) ---"
TUNABLE = {"rank_one": ("key_method", "memory_weight"), "low_rank": ("key_method", "memory_weight"),
           "closed_form": ("key_method", "memory_weight")}
"""Strategy fields whose defaults a generator config reads from its `tuned:` block."""


def tuned_block(edit: str, out: Path, chosen: dict[str, dict[str, object]]) -> str:
    """The generator config's tuned section: the default layer (rank_one's choice) and the tunable fields."""
    lines = [TUNED_MARK, f"tuned_from: {out.as_posix()}/chosen.json  # the benchmark of {edit} these came from"]
    layer = chosen.get("rank_one", {}).get("overrides", {}).get("generator.layer")  # type: ignore[union-attr]
    if layer:
        lines.append(f"layer: {layer}")
    lines.append("tuned:")
    for name, fields in TUNABLE.items():
        if name in chosen:
            picked = chosen[name]["overrides"]
            values = ", ".join(f"{f}: {_yaml_value(picked[f'strategy.{f}'])}" for f in fields  # type: ignore[index]
                               if f"strategy.{f}" in picked)  # type: ignore[operator]
            lines.append(f"  {name}: {{{values}}}")
    return "\n".join(lines) + "\n"


def _yaml_value(v: object) -> str:
    try:
        return repr(float(v))  # type: ignore[arg-type]
    except ValueError:
        return str(v)


def write_tuned(generator_yaml: Path, block: str) -> None:
    """Replace the generator config's tuned section (from `TUNED_MARK` to the end) by `block`."""
    text = generator_yaml.read_text()
    if TUNED_MARK not in text:
        raise SystemExit(f"--tune: {generator_yaml} has no line {TUNED_MARK!r} to write below")
    atomic_write(generator_yaml, lambda tmp: tmp.write_text(text[: text.index(TUNED_MARK)] + block))


def study_overrides(experiment_yaml: Path, trials: int | None, side_by_side: bool) -> list[str]:
    """The overrides that make a validation multirun an Optuna study over the grid's own space: `trials` jobs
    (default: the grid's count); with a launcher, as many trials at once as there are cores."""
    search = optuna_overrides(experiment_yaml, trials or grid_size(experiment_yaml), seed=0)
    return [*search, f"hydra.sweeper.n_jobs={os.cpu_count() or 1}"] if side_by_side else search


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("edit", help="edit config name, e.g. toy_dome_to_spire or face_eyeglasses")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--strategies", default=None, help="comma-separated subset (default: all of the family's)")
    ap.add_argument("--examples", type=int, default=1,
                    help="also score each chosen setting with copy/paste pairs 1..N-1 on the test seeds (toy rules)")
    ap.add_argument("--fid-samples", type=int, default=FID_SAMPLES,
                    help="FID / KID of each test run over N unedited and N edited samples (eval.fid.samples; "
                         "0: none); validation runs never compute it")
    ap.add_argument("--launcher", default=None,
                    help="Hydra launcher of the multiruns, e.g. cores (jobs side by side, threads = cores // jobs) or "
                         "slurm (rewrite/conf/hydra/launcher/); default: one job after another")
    ap.add_argument("--sweeper", choices=("grid", "optuna"), default="grid",
                    help="validation search: every setting of the space (grid), or a seeded Optuna TPE study over the "
                         "same space (docs/optuna.md), in <out>/val_optuna/")
    ap.add_argument("--trials", type=int, default=None,
                    help="--sweeper optuna: jobs per strategy (default: as many as the grid has)")
    ap.add_argument("--tune", action="store_true",
                    help="write the choices into the generator config's tuned section (its strategy defaults)")
    ap.add_argument("--choose-examples", type=int, default=1,
                    help="choose each setting by its mean edit_score over copy/paste pairs 0..N-1 on the "
                         "validation seeds (toy rules)")
    ap.add_argument("--min-specificity", type=float, default=None,
                    help="choose each setting by its mean generality among those whose mean specificity on the "
                         "validation seeds is at least this (a point of the Pareto front), not by edit_score")
    ap.add_argument("--search", action="append", default=[], metavar="KEY=V1,V2",
                    help="replace one axis of every strategy's validation search space (repeatable), e.g. "
                         "strategy.memory_weight=1,5,20,50 (use a new --out: a finished search is not rerun)")
    args = ap.parse_args(argv)
    try:  # before any work: the output folder must be a folder it can write
        check_writable_dir(args.out)
    except OSError as e:
        raise SystemExit(f"--out: {e}") from None
    fam = family(args.edit)
    if args.examples < 1:
        raise SystemExit(f"--examples must be ≥ 1, got {args.examples}")
    if args.choose_examples < 1:
        raise SystemExit(f"--choose-examples must be ≥ 1, got {args.choose_examples}")
    if args.fid_samples < 0 or args.fid_samples == 1:
        raise SystemExit(f"--fid-samples must be 0 (none) or ≥ 2, got {args.fid_samples}")
    if args.sweeper == "optuna" and args.choose_examples > 1:
        raise SystemExit("--sweeper optuna: --choose-examples needs every setting on every example; a study picks "
                         "one setting per trial")
    if args.min_specificity is not None and not 0 < args.min_specificity <= 1:
        raise SystemExit(f"--min-specificity must be in (0, 1], got {args.min_specificity}")
    if any("=" not in o or o.startswith(("+", "~")) for o in args.search):
        raise SystemExit(f"--search takes KEY=V1,V2 (an axis to replace), got {args.search}")
    if args.trials is not None and (args.sweeper != "optuna" or args.trials < 1):
        raise SystemExit(f"--trials must be ≥ 1 and needs --sweeper optuna, got --trials {args.trials} with "
                         f"--sweeper {args.sweeper}")
    fid = [f"eval.fid.samples={args.fid_samples}"] if args.fid_samples else []  # the test runs only
    varies = max(args.examples, args.choose_examples) > 1
    if varies and "example" not in OmegaConf.load(Path(CONF_DIR) / "edit" / f"{args.edit}.yaml"):
        raise SystemExit(f"--examples: edit {args.edit!r} has no `example` setting to vary (toy rules have one)")
    names = args.strategies.split(",") if args.strategies else list(STRATEGIES)
    out, log = args.out, args.out / "commands.txt"
    out.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "rewrite", f"edit={args.edit}", *COMMON]
    launcher = [f"hydra/launcher={args.launcher}"] if args.launcher else []  # the multiruns only
    chosen: dict[str, dict[str, object]] = {}
    unmet: dict[str, str] = {}  # --min-specificity: the strategies with no setting within the budget, and why
    for name in names:
        experiment = f"search_{fam}_{name}"
        folder = out / ("val_optuna" if args.sweeper == "optuna" else "val") / name
        if not (EXPERIMENTS / f"{experiment}.yaml").is_file():
            raise SystemExit(f"no search space for {name} on {fam} rules: conf/experiment/{experiment}.yaml")
        search = study_overrides(EXPERIMENTS / f"{experiment}.yaml", args.trials, bool(args.launcher)) \
            if args.sweeper == "optuna" else []
        # a study stopped partway has complete job folders too: only its results file says it finished
        if not complete(folder) or (args.sweeper == "optuna" and not (folder / OPTUNA_RESULTS).is_file()):
            print(f"[validation] {name}: +experiment={experiment}{' (optuna)' if search else ''}", flush=True)
            pairs = [f"{EXAMPLE}={','.join(map(str, range(args.choose_examples)))}"] if args.choose_examples > 1 else []
            run([*base[:3], "-m", *base[3:], f"+experiment={experiment}", "split=validation", *pairs,
                 *VALIDATION_ONLY, *launcher, *search, *args.search, f"hydra.sweep.dir={folder}"], log)
        try:
            overrides, best = choose(folder, args.min_specificity)
        except BudgetUnmet as e:
            unmet[name] = str(e)
            print(f"[chosen] {name}: none ({e})", flush=True)
            continue
        chosen[name] = {"overrides": overrides, "validation_edit_score": best["edit_score"],
                        "validation_examples": best["examples"]}
        if args.min_specificity is not None:
            chosen[name].update(min_specificity=args.min_specificity, validation_generality=best["generality"],
                                validation_specificity=best["specificity"])
        budget = "" if args.min_specificity is None else \
            f"generality {best['generality']:.3f} at specificity {best['specificity']:.3f}, "
        print(f"[chosen] {name}: {overrides} (validation {budget}edit_score {best['edit_score']:.3f}, mean of "
              f"{best['examples']} job(s))", flush=True)
    names = [n for n in names if n in chosen]
    if not names:
        raise SystemExit(f"--min-specificity {args.min_specificity}: no strategy has a setting within the budget")
    atomic_write(out / "chosen.json", lambda tmp: tmp.write_text(json.dumps(chosen, indent=2)))
    if args.tune:
        generator = OmegaConf.load(EXPERIMENTS / f"search_{fam}_{names[0]}.yaml").defaults[0]["override /generator"]
        write_tuned(Path(CONF_DIR) / "generator" / f"{generator}.yaml", tuned_block(args.edit, out, chosen))
    settings = write_test_settings(out, fam, names, chosen)
    missing = [f"{i}_{name}" for i, name in enumerate(names)  # a run without the asked FID runs again
               if not ran_with(out / "test" / f"{i}_{name}", [f"+{TEST_GROUP}={i}_{name}", *fid])
               or not ran_choice(out / "test" / f"{i}_{name}", chosen[name]["overrides"])]  # type: ignore[arg-type]
    if missing:  # one multirun: the jobs share the unedited model's snapshots (and the cores, with a launcher)
        for option in missing:
            shutil.rmtree(out / "test" / option, ignore_errors=True)
        print(f"[test] {', '.join(missing)}", flush=True)
        run([*base[:3], "-m", *base[3:], f"+{TEST_GROUP}={','.join(missing)}", *fid, "split=test", *launcher,
             f"hydra.searchpath=[file://{settings.resolve()}]", f"hydra.sweep.dir={out / 'test'}",
             f"hydra.sweep.subdir=${{hydra:runtime.choices.{TEST_GROUP}}}"], log)
    for i, name in enumerate(names):  # one multirun per strategy over the examples still missing
        ov = [f"{k}={v}" for k, v in chosen[name]["overrides"].items()]  # type: ignore[union-attr]
        folder = out / "examples" / f"{i}_{name}"
        missing = [k for k in range(1, args.examples) if not ran_with(folder / str(k), [*ov, f"{EXAMPLE}={k}"])]
        if missing:
            for k in missing:
                shutil.rmtree(folder / str(k), ignore_errors=True)
            print(f"[examples {','.join(map(str, missing))}] {name}", flush=True)
            run([*base[:3], "-m", *base[3:], f"+experiment=search_{fam}_{name}", *ov,
                 f"{EXAMPLE}={','.join(map(str, missing))}", "split=test", *launcher, f"hydra.sweep.dir={folder}",
                 "hydra.sweep.subdir=${edit.example}"], log)
    text = summary(out, names, chosen, args.examples, args.fid_samples)
    if unmet:
        text += "\n\n" + "\n".join(f"`{n}`: {why} on the validation seeds." for n, why in unmet.items())
    atomic_write(out / "table.md", lambda tmp: tmp.write_text(text + "\n"))
    print(text)
    subprocess.run([sys.executable, "-m", "rewrite.bench.sweep_table", str(out / "test"),
                    "--csv", str(out / "test.csv"),
                    "--pareto", str(out / "pareto.png")], check=True, capture_output=True)
    print(f"table: {out / 'table.md'}, {out / 'test.csv'}; Pareto plot: {out / 'pareto.png'}")


def _num(m: dict[str, object], key: str) -> str:
    v = m.get(key)
    return f"{v:.2f}" if isinstance(v, (int, float)) and v == v else "-"


def _worst(m: dict[str, object]) -> str:
    name = m.get("specificity_worst_class_name")
    return f" ({name} {_num(m, 'specificity_worst_class')})" if name else ""


def _ci(m: dict[str, object], key: str) -> str:
    return f"{m[key]:.2f} [{m[key + '_ci_low']:.2f}, {m[key + '_ci_high']:.2f}]"


def summary(out: Path, names: list[str], chosen: dict[str, dict[str, object]], examples: int = 1,
            fid_samples: int = 0) -> str:
    """One markdown row per strategy: its chosen setting and its test-seed scores (the README's table); with
    `fid_samples`, the FID of the edited model against the unedited one (`-` for a run that did not measure it)."""
    columns = ["strategy", "chosen on validation", "efficacy (ceiling)", "generality (ceiling)",
               "specificity per part (worst part)", "specificity of pixels", "edit_score",
               *([f"FID ({fid_samples} samples)"] if fid_samples else []), "time s",
               *([f"edit_score, {examples} examples: mean [min, max]"] if examples > 1 else [])]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for i, name in enumerate(names):
        m = json.loads((out / "test" / f"{i}_{name}" / "metrics.json").read_text())
        setting = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in chosen[name]["overrides"].items())  # type: ignore
        row = (f"| `{name}` | {setting} | {m['efficacy']:.2f} ({_num(m, 'ceiling_efficacy')}) | "
               f"{_ci(m, 'generality')} ({_num(m, 'ceiling_generality')}) | {_ci(m, 'specificity')}"
               f"{_worst(m)} | {_num(m, 'specificity_pixels')} | {_ci(m, 'edit_score')} |"
               + (f" {_num(m, 'fid')} |" if fid_samples else "") + f" {m['edit_time_s']:.3g} |")
        if examples > 1:
            folders = [out / "examples" / f"{i}_{name}" / str(k) for k in range(1, examples)]
            scores = [float(m["edit_score"])] + [
                float(json.loads((f / "metrics.json").read_text())["edit_score"]) for f in folders]
            row += f" {sum(scores) / len(scores):.2f} [{min(scores):.2f}, {max(scores):.2f}] |"
        lines.append(row)
    return "\n".join(lines)

if __name__ == "__main__":
    main()
