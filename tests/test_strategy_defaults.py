"""One source of truth for strategy defaults: every strategy YAML says what its dataclass says.

The YAMLs exist so a sweep can name a strategy and override fields on the command line; the dataclass
(`Strategy.Config`) holds the defaults the library path uses. This test makes them agree, except for
what a YAML says on purpose: a named variant (`low_rank` is `rank_one` with rank 4) and the settings
that read a model family's measured best (`${oc.select:generator.tuned.<strategy>.<field>,<default>}`),
whose fallback must still be the dataclass default.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf

from rewrite.pipeline import CONF_DIR

STRATEGIES = sorted(p.stem for p in (Path(CONF_DIR) / "strategy").glob("*.yaml"))
VARIANTS = {"low_rank": {"rank": 4}}
"""Fields a strategy YAML sets differently from its dataclass on purpose."""


def _defaults(config_class: type) -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(config_class)}


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_yaml_matches_its_dataclass(name: str) -> None:
    # the tiny generator has no `tuned:` block, so family-tuned fields fall back to their YAML default
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["generator=tiny", f"strategy={name}"])
    raw = OmegaConf.to_container(cfg.strategy, resolve=True)
    target = raw.pop("_target_")
    expected = {**_defaults(get_class(target).Config), **VARIANTS.get(name, {})}
    assert raw == expected, f"conf/strategy/{name}.yaml disagrees with {target}.Config"


def test_family_tuned_fields_follow_the_generator_and_the_command_line_wins() -> None:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        toy = compose("config", overrides=["generator=toy_stylegan2", "strategy=rank_one"])
        cli = compose("config", overrides=["generator=toy_stylegan2", "strategy=rank_one",
                                           "strategy.memory_weight=3.0"])
    assert toy.strategy.memory_weight == toy.generator.tuned.rank_one.memory_weight
    assert toy.strategy.key_method == toy.generator.tuned.rank_one.key_method
    assert cli.strategy.memory_weight == 3.0  # a command-line value wins
