"""The policy file: validation errors name file, line and key; precedence; the published schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT
from mlflow_ci.config import Naming, Policy, json_schema, load_policy
from mlflow_ci.core.errors import PolicyError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mlflow-ci.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_policy_gets_documented_defaults(tmp_path: Path) -> None:
    loaded = load_policy(write(tmp_path, "project: churn\n"), env={})
    p = loaded.policy
    assert p.tags.required == ["dataset", "env", "purpose", "owner"]
    assert p.naming.experiment == "exp_{project}_{date}"
    assert p.naming.run == "run_{objective}_{seed}"
    assert p.smoke.env_manager == "virtualenv"
    assert loaded.source_of("smoke.env_manager") == "default"
    assert loaded.source_of("project") == f"{tmp_path / 'mlflow-ci.yaml'}:1"


def test_unknown_key_names_line_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "project: churn\nsmoke:\n  entry_point: main\n  env_manger: uv\n")
    with pytest.raises(PolicyError) as err:
        load_policy(path, env={})
    message = str(err.value)
    assert f"{path}:4" in message
    assert "smoke.env_manger" in message
    assert "did you mean 'env_manager'" in message


def test_wrong_type_names_key_value_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, "project: churn\nsmoke:\n  timeout: soon\n")
    with pytest.raises(PolicyError) as err:
        load_policy(path, env={})
    message = str(err.value)
    assert f"{path}:3" in message
    assert "smoke.timeout" in message
    assert '"soon"' in message
    assert "integer" in message


def test_bad_pattern_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "project: churn\ntags:\n  patterns:\n    env: '(unclosed'\n")
    with pytest.raises(PolicyError, match=r"tags\.patterns.*not a valid regular expression"):
        load_policy(path, env={})


def test_unknown_placeholder_in_template_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "project: churn\nnaming:\n  run: 'run_{team}_{seed}'\n")
    with pytest.raises(PolicyError, match=r"\{team\}.*not a known placeholder"):
        load_policy(path, env={})


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "project: churn\nsmoke:\n  parameters: {seed: 1\n")
    with pytest.raises(PolicyError, match=rf"{re.escape(str(path))}:\d+: not valid YAML"):
        load_policy(path, env={})


def test_missing_project_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="required key 'project' is missing"):
        load_policy(write(tmp_path, "smoke: {}\n"), env={})
    with pytest.raises(PolicyError, match="must be a mapping"):
        load_policy(write(tmp_path, "- a\n- b\n"), env={})


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "project: churn\nsmoke:\n  env_manager: uv\n  timeout: 100\n")
    env = {"MLFLOW_CI__SMOKE__TIMEOUT": "200", "MLFLOW_CI__SMOKE__ENV_MANAGER": "virtualenv"}
    loaded = load_policy(path, env=env, overrides={"smoke.env_manager": "local"})
    assert loaded.policy.smoke.timeout == 200
    assert loaded.source_of("smoke.timeout") == "env MLFLOW_CI__SMOKE__TIMEOUT"
    assert loaded.policy.smoke.env_manager == "local"
    assert loaded.source_of("smoke.env_manager").startswith("flag")
    assert loaded.source_of("smoke.entry_point") == "default"


def test_bad_env_override_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "project: churn\n")
    with pytest.raises(PolicyError, match="env MLFLOW_CI__SMOKE__ENV_MANAGER"):
        load_policy(path, env={"MLFLOW_CI__SMOKE__ENV_MANAGER": "conda"})


def test_policy_is_frozen(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "project: churn\n"), env={}).policy
    with pytest.raises(Exception, match="frozen"):
        policy.project = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("which", "name", "ok"),
    [
        ("experiment", "exp_churn_20260101", True),
        ("experiment", "exp_churn_2026-01-01", True),
        ("experiment", "exp_other_20260101", False),
        ("experiment", "exp_churn_", False),
        ("run", "run_classify_42", True),
        ("run", "run_Classify_42", False),
        ("run", "run_classify_x", False),
        ("run", "my-run", False),
    ],
)
def test_naming_patterns(which: str, name: str, ok: bool) -> None:
    naming = Naming()
    assert bool(re.match(naming.pattern(which, "churn"), name)) is ok  # type: ignore[arg-type]


def test_rendered_names_match_their_own_pattern() -> None:
    naming = Naming()
    name = naming.render("experiment", "churn")
    assert re.match(naming.pattern("experiment", "churn"), name)
    assert naming.render("run", "churn", objective="classify", seed=3) == "run_classify_3"


def test_published_schema_matches_the_models() -> None:
    """docs/mlflow-ci.schema.json is generated from the models; regenerate with `mlflow-ci policy schema -o`."""
    published = json.loads((ROOT / "docs" / "mlflow-ci.schema.json").read_text(encoding="utf-8"))
    assert published == json_schema()
    assert published["additionalProperties"] is False
    assert set(Policy.model_fields) <= set(published["properties"])


def test_every_section_but_project_is_optional() -> None:
    """A policy written before a section existed stays valid when the section is added
    (docs/extending.md): only ``project`` is required, and a bare policy validates."""
    required = [name for name, field in Policy.model_fields.items() if field.is_required()]
    assert required == ["project"]
    assert Policy.model_validate({"project": "bare"}).project == "bare"


def test_example_policy_is_valid() -> None:
    loaded = load_policy(ROOT / "example_project" / "mlflow-ci.yaml", env={})
    assert loaded.policy.project == "example"


def test_bad_placeholder_pattern_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "project: churn\nnaming:\n  placeholders:\n    team: '[a-z'\n")
    with pytest.raises(PolicyError, match=r"placeholder 'team'.*not a valid regular expression"):
        load_policy(path, env={})
