"""The README's "your own model, strategy or scorer" example runs exactly as written, from outside the package."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _example() -> tuple[dict[str, str], str]:
    """The example's files (fenced blocks whose first line is `# <path>`) and its run command."""
    section = (ROOT / "README.md").read_text().split("## Your own model, strategy or scorer", 1)[1]
    section = section.split("\n## ", 1)[0]
    files, command = {}, ""
    for block in re.findall(r"```[a-z]*\n(.*?)```", section, flags=re.S):
        first, _, body = block.partition("\n")
        if first == "# run":
            command = body.strip()
        elif first.startswith("# ") and ("/" in first or first.endswith(".py")):
            files[first[2:].strip()] = body
    return files, command


def test_readme_extension_example_runs(tmp_path: Path) -> None:
    files, command = _example()
    assert set(files) == {"my_models.py", "my_conf/generator/my_generator.yaml", "my_conf/strategy/one_step.yaml",
                          "my_conf/edit/my_box.yaml"}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    env_part, _, rest = command.partition(" python ")
    assert env_part == "PYTHONPATH=." and rest.startswith("-m rewrite ")
    args = [sys.executable, *shlex.split(rest), "progress=false", "stats.num_samples=64",
            f"hydra.run.dir={tmp_path}/run", f"stats.cache_dir={tmp_path}/cache"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["strategy"] == "one_step" and m["mean_change"] > 0  # the user's strategy changed, their scorer saw it
    assert m["value_loss"] < m["value_loss_before"]
    assert (tmp_path / "run" / "edit.safetensors").is_file() and (tmp_path / "run" / "grid.png").is_file()
