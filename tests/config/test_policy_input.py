"""Policy files that must be refused before any work, each with one sentence naming file and line:
keys written twice, bytes that are not UTF-8, alias bombs, recursive aliases, control characters,
oversized files, folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli
from mlflow_ci.config import load_policy
from mlflow_ci.config.loader import MAX_EXPANDED_NODES, MAX_POLICY_BYTES
from mlflow_ci.core.errors import PolicyError


def refused(path: Path) -> str:
    with pytest.raises(PolicyError) as err:
        load_policy(path, env={})
    return str(err.value)


def write(tmp_path: Path, data: str | bytes) -> Path:
    path = tmp_path / "mlflow-ci.yaml"
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def test_a_key_written_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "project: a\nsmoke:\n  timeout: 5\n  timeout: 6\n")
    assert refused(path).startswith(
        f"{path}:4: key 'timeout' is written twice in the same mapping (first at line 3)"
    )


def test_a_key_written_twice_deep_in_a_list_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "project: a\ngates:\n  metrics:\n    - name: acc\n      name: f1\n")
    assert refused(path).startswith(f"{path}:5: key 'name' is written twice")


def test_a_top_level_key_written_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "project: a\nproject: b\n")
    assert refused(path).startswith(f"{path}:2: key 'project' is written twice")


def test_a_merge_key_may_be_overridden(tmp_path: Path) -> None:
    """`<<: *base` then the same key is YAML's override, not a duplicate."""
    path = write(tmp_path, "project: a\nsmoke: &s\n  timeout: 5\ntrain:\n  <<: {timeout: 9}\n  timeout: 7\n")
    assert load_policy(path, env={}).policy.train.timeout == 7


def test_bytes_that_are_not_utf8_are_refused_with_line_and_offset(tmp_path: Path) -> None:
    data = b"project: a\nnaming:\n  run: caf\xe9\n"
    path = write(tmp_path, data)
    assert refused(path) == (
        f"{path}:3: the policy file is not UTF-8 (byte 0xe9 at offset {data.index(0xE9)}). Save it as UTF-8."
    )


def test_an_alias_bomb_is_refused_at_the_alias_that_crosses_the_bound(tmp_path: Path) -> None:
    lines = ["project: a", 'x0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    # x{k} (line k + 2) holds 9**(k + 1) strings: x4, on line 6, is the first past the bound.
    assert 9**5 > MAX_EXPANDED_NODES > 9**4
    assert refused(path).startswith(f"{path}:6: the policy's YAML aliases expand to more than")


def test_a_few_aliases_are_still_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "project: a\nsmoke: &s {timeout: 60}\ntrain: {timeout: 60}\nx: [*s]\n")
    assert "unknown key 'x'" in refused(path)


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "project: a\nx: &a [1, *a]\n")
    assert refused(path).startswith(f"{path}:2: a YAML alias refers to a node that contains it")


def test_a_control_character_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "project: a\nx: \x00\n")
    assert refused(path).startswith(f"{path}:2: not valid YAML: the control character U+0000")


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "project: a\n# " + "x" * MAX_POLICY_BYTES + "\n")
    assert refused(path).startswith(f"{path}:1: the policy file is {path.stat().st_size:,} bytes")


def test_a_folder_is_not_a_policy_file(tmp_path: Path) -> None:
    assert refused(tmp_path) == f"{tmp_path}: is a folder; give the policy file (mlflow-ci.yaml) itself."


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"project: a\nproject: b\n", 2),
        (b"project: a\n\xff\n", 2),
        (b"project: a\nx: &a [1, *a]\n", 2),
    ],
)
def test_the_cli_exits_2_with_one_sentence_and_no_traceback(tmp_path: Path, data: bytes, line: int) -> None:
    path = write(tmp_path, data)
    done = run_cli("policy", "check", str(path))
    assert done.returncode == 2
    assert f"{path}:{line}: " in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
