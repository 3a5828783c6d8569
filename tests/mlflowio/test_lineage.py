"""Lineage has one definition: smoke's run tags and register's version tags carry the same commit
and lock hash, in one format, and values written in the old formats still read."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow_ci.mlflowio import lineage
from mlflow_ci.mlflowio.tags import GIT_COMMIT, LOCK_FILE_HASH, LOCK_HASH
from mlflow_ci.release.register import lineage_tags

PYTHON_ENV = "python: '3.11.7'\nbuild_dependencies: []\ndependencies:\n  - -r requirements.lock\n"
LOCK = "scikit-learn==1.5.2 --hash=sha256:" + "0" * 64 + "\n"


def project(folder: Path, *, git: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "python_env.yaml").write_text(PYTHON_ENV)
    (folder / "requirements.lock").write_text(LOCK)
    (folder / "MLproject").write_text("name: p\npython_env: python_env.yaml\n")
    if git:
        cfg = ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
        subprocess.run(["git", "init", "-q", str(folder)], check=True)
        subprocess.run(["git", "-C", str(folder), "add", "."], check=True)
        subprocess.run(["git", "-C", str(folder), *cfg, "commit", "-q", "-m", "init"], check=True)
    return folder


def fake_run(tags: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(
        info=SimpleNamespace(run_id="r" * 32), data=SimpleNamespace(tags=tags), inputs=None
    )


def old_smoke_lock_hash(folder: Path, names: list[str]) -> str:
    """What reproducibility.lock_hash wrote before 2026-12-08: bare hex over names and contents."""
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return digest.hexdigest()


def test_smoke_and_register_record_the_same_commit_and_lock_hash(tmp_path: Path) -> None:
    folder = project(tmp_path / "p")
    facts = lineage.facts(folder, python_version="3.11.7", env_manager="local")
    head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    assert facts[GIT_COMMIT] == head
    assert facts[LOCK_HASH].startswith("python_env.yaml+requirements.lock:sha256:")
    # MLflow's own commit tag says the same; the run's own record is what register copies.
    run = fake_run({**facts, "mlflow.source.git.commit": head})
    for project_dir in (folder, None):  # hashed again from the project, or read from the run
        tags = lineage_tags(run, {}, project_dir=project_dir, pull_request=None)
        assert tags[GIT_COMMIT] == facts[GIT_COMMIT]
        assert tags[LOCK_FILE_HASH] == facts[LOCK_HASH]
        assert lineage.same_lock(tags[LOCK_FILE_HASH], facts[LOCK_HASH])


def test_a_dirty_project_is_recorded_as_such_on_both_paths(tmp_path: Path) -> None:
    folder = project(tmp_path / "p")
    (folder / "requirements.lock").write_text(LOCK + "numpy==2.1.0\n")
    facts = lineage.facts(folder, python_version="3.11.7", env_manager="local")
    assert facts[GIT_COMMIT].endswith("+dirty")
    run = fake_run({**facts, "mlflow.source.git.commit": facts[GIT_COMMIT].removesuffix("+dirty")})
    assert lineage_tags(run, {}, project_dir=folder, pull_request=None)[GIT_COMMIT] == facts[GIT_COMMIT]


def test_commit_falls_back_to_mlflow_then_the_ci_checkout() -> None:
    env = {"GITHUB_SHA": "c" * 40}
    assert lineage.git_commit(env, {GIT_COMMIT: "a" * 40, "mlflow.source.git.commit": "b" * 40}) == "a" * 40
    assert lineage.git_commit(env, {GIT_COMMIT: "unknown", "mlflow.source.git.commit": "b" * 40}) == "b" * 40
    assert lineage.git_commit(env, {}) == "c" * 40
    assert lineage.git_commit({}, {}) == ""


def test_outside_a_repository_the_commit_is_unknown(tmp_path: Path) -> None:
    assert lineage.head_commit(project(tmp_path / "p", git=False)) == "unknown"


def test_one_file_is_its_sha256sum(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "uv.lock").write_text("version = 1\n")
    expected = hashlib.sha256(b"version = 1\n").hexdigest()
    assert lineage.lock_hash(folder) == f"uv.lock:sha256:{expected}"
    assert lineage.lock_hash(tmp_path) == "none"


def test_an_old_smoke_run_tag_reads_and_matches_the_new_format(tmp_path: Path) -> None:
    folder = project(tmp_path / "p", git=False)
    old = old_smoke_lock_hash(folder, ["python_env.yaml", "requirements.lock"])
    parsed = lineage.read_lock_hash({LOCK_HASH: old})
    assert parsed == lineage.LockHash((), old)
    new = lineage.lock_hash(folder)
    assert lineage.same_lock(old, new)
    assert lineage.same_lock(new, old)
    # Registering an old run without the project keeps the value the run recorded.
    tags = lineage_tags(fake_run({LOCK_HASH: old}), {}, project_dir=None, pull_request=None)
    assert tags[LOCK_FILE_HASH] == old
    assert lineage.read_lock_hash(tags) == parsed
    # A changed lock is another environment, whichever format says so.
    (folder / "requirements.lock").write_text(LOCK + "numpy==2.1.0\n")
    assert not lineage.same_lock(old, lineage.lock_hash(folder))


def test_an_old_version_tag_reads_and_matches_the_new_format(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "requirements.lock").write_text(LOCK)
    old = f"requirements.lock:sha256:{hashlib.sha256(LOCK.encode()).hexdigest()}"
    parsed = lineage.read_lock_hash({LOCK_FILE_HASH: old})
    assert parsed is not None
    assert parsed.files == ("requirements.lock",)
    assert lineage.same_lock(old, lineage.lock_hash(folder))
    # Same digest, other files: not the same environment.
    assert not lineage.same_lock(old, old.replace("requirements.lock", "uv.lock"))


def test_a_version_tag_is_read_before_the_run_tag() -> None:
    a, b = "a" * 64, "b" * 64
    assert lineage.read_lock_hash({LOCK_FILE_HASH: f"uv.lock:sha256:{a}", LOCK_HASH: b}) == lineage.LockHash(
        ("uv.lock",), a
    )
    assert lineage.read_lock_hash({LOCK_FILE_HASH: "", LOCK_HASH: b}) == lineage.LockHash((), b)


@pytest.mark.parametrize("value", ["", "none", "abc", ":sha256:" + "a" * 64, "x:sha256:zz", None])
def test_what_is_not_a_lock_hash(value: str | None) -> None:
    assert lineage.parse_lock_hash(value) is None
    assert not lineage.same_lock(value, value)


def test_includes_outside_the_known_names_are_hashed_and_named(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    (folder / "deps").mkdir(parents=True)
    (folder / "python_env.yaml").write_text("dependencies:\n  - -r deps/pinned.txt\n")
    (folder / "deps" / "pinned.txt").write_text("numpy==2.1.0\n")
    value = lineage.lock_hash(folder)
    assert value.startswith("deps/pinned.txt+python_env.yaml:sha256:")
    assert lineage.parse_lock_hash(value) == lineage.LockHash(
        ("deps/pinned.txt", "python_env.yaml"), value.rsplit(":", 1)[1]
    )
