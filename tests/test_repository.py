"""The repository's own promises: ci/constraints.txt locks mlflow-ci's dependencies and is
regenerated whenever pyproject.toml's dependency lists change (its header records their hash);
test files have unique names."""

from __future__ import annotations

import hashlib
import json
import re

import tomllib
from conftest import ROOT

CONSTRAINTS = ROOT / "ci" / "constraints.txt"


def test_the_lock_matches_pyprojects_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = {k: project.get(k) for k in ("requires-python", "dependencies", "optional-dependencies")}
    digest = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()
    header = re.search(r"^# pyproject-sha256: ([0-9a-f]{64})$", CONSTRAINTS.read_text(encoding="utf-8"), re.M)
    assert header is not None, "ci/constraints.txt has no pyproject-sha256 header: run `nox -s lock`"
    assert header.group(1) == digest, "pyproject.toml's dependencies changed: run `nox -s lock`"


def test_every_direct_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pinned = set(re.findall(r"^([A-Za-z0-9_.-]+)==", CONSTRAINTS.read_text(encoding="utf-8"), re.M))
    pinned = {name.lower().replace("_", "-") for name in pinned}
    direct = [*project["dependencies"], *(d for ds in project["optional-dependencies"].values() for d in ds)]
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in direct}
    assert names - pinned == set()


def test_every_nox_session_installs_with_the_lock() -> None:
    noxfile = (ROOT / "noxfile.py").read_text(encoding="utf-8")
    assert '"--constraint", str(CONSTRAINTS)' in noxfile
    assert noxfile.count("session.install(") == 1, "one install helper, with the constraints"


def test_test_files_have_unique_names() -> None:
    """Tests mirror the package tree without __init__ files, so pytest imports each by its bare
    name: two test files of one name in two folders stop the whole suite at collection."""
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
