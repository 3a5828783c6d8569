"""Adoption levels (`levels:`): enforce by default, YAML 1.1's booleans, errors that say where a
level goes."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow_ci.config import FAMILIES, Levels, load_policy
from mlflow_ci.core.errors import PolicyError


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    path = tmp_path / "mlflow-ci.yaml"
    path.write_text("project: churn\n" + text, encoding="utf-8")
    return load_policy(path, env=env or {})


def test_every_family_is_enforced_by_default(tmp_path: Path) -> None:
    levels = load(tmp_path, "").policy.levels
    assert levels == Levels()
    assert [levels.of(f) for f in FAMILIES] == ["enforce"] * len(FAMILIES)
    assert levels.of(None) == "enforce"
    assert levels.at("warn") == levels.at("off") == []


def test_levels_are_read_per_family(tmp_path: Path) -> None:
    loaded = load(tmp_path, "levels:\n  naming: warn\n  tags: 'off'\n  model: enforce\n")
    levels = loaded.policy.levels
    assert (levels.naming, levels.tags, levels.model, levels.dataset) == ("warn", "off", "enforce", "enforce")
    assert levels.at("warn") == ["naming"]
    assert levels.at("off") == ["tags"]
    assert loaded.source_of("levels.naming") == f"{tmp_path / 'mlflow-ci.yaml'}:3"


@pytest.mark.parametrize("word", ["off", "Off", "OFF", "no", "false"])
def test_an_unquoted_off_is_off(tmp_path: Path, word: str) -> None:
    """PyYAML reads an unquoted off (or no, false) as the boolean false: that is `off`."""
    levels = load(tmp_path, f"levels: {{naming: {word}, dataset: {word}}}\n").policy.levels
    assert levels.naming == levels.dataset == "off"


@pytest.mark.parametrize("word", ["on", "yes", "true"])
def test_an_unquoted_on_is_refused_with_a_sentence(tmp_path: Path, word: str) -> None:
    with pytest.raises(PolicyError) as err:
        load(tmp_path, f"levels:\n  tags: {word}\n")
    message = str(err.value)
    assert f"{tmp_path / 'mlflow-ci.yaml'}:3" in message
    assert "'levels.tags' has value true" in message
    assert "one of off, warn, enforce" in message
    assert "not a level" in message


def test_an_unknown_level_or_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"levels\.naming.*\"strict\".*'off', 'warn' or 'enforce'"):
        load(tmp_path, "levels: {naming: strict}\n")
    with pytest.raises(PolicyError, match=r"unknown key 'levels\.nameing'; did you mean 'naming'"):
        load(tmp_path, "levels: {nameing: warn}\n")


def test_levels_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(
        PolicyError, match=r"'levels' has value false; expected: a mapping of family to level"
    ):
        load(tmp_path, "levels: off\n")


@pytest.mark.parametrize(("section", "text", "shown"), [("naming", "off", "off"), ("tags", "warn", "warn")])
def test_a_level_written_as_the_section_says_where_levels_go(
    tmp_path: Path, section: str, text: str, shown: str
) -> None:
    with pytest.raises(PolicyError) as err:
        load(tmp_path, f"{section}: {text}\n")
    assert f"write `levels: {{{section}: {shown}}}`" in str(err.value)
    assert f"{tmp_path / 'mlflow-ci.yaml'}:2" in str(err.value)


def test_an_environment_variable_sets_a_level(tmp_path: Path) -> None:
    """A CI job can tighten (or relax) one family without editing the file; `off` from the
    environment is YAML too."""
    loaded = load(
        tmp_path,
        "levels: {naming: warn}\n",
        env={"MLFLOW_CI__LEVELS__NAMING": "enforce", "MLFLOW_CI__LEVELS__MODEL": "off"},
    )
    assert loaded.policy.levels.naming == "enforce"
    assert loaded.policy.levels.model == "off"
    assert loaded.source_of("levels.model") == "env MLFLOW_CI__LEVELS__MODEL"
