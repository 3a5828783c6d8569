"""`mlflow-ci projects`: the MLflow projects of a monorepo a change touches, in real git
repositories made in tmp_path, through the real CLI (as pr-checks.yml runs it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_MLPROJECT, run_cli
from mlflow_ci.config import load_policy
from mlflow_ci.core.errors import PolicyError
from mlflow_ci.workflows.projects import glob_matches, unique_names

GIT = ["git", "-c", "user.name=mlflow-ci tests", "-c", "user.email=tests@invalid",
       "-c", "init.defaultBranch=main"]  # fmt: skip


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def add_project(repo: Path, folder: str, *, watch: list[str] | None = None) -> None:
    write(repo / folder / "MLproject", TINY_MLPROJECT)
    write(repo / folder / "train.py", "print('train')\n")
    policy = f"project: {(Path(folder).name or 'root').replace(' ', '-')}\n"
    if watch:
        policy += "watch:\n" + "".join(f"  - {json.dumps(w)}\n" for w in watch)
    write(repo / folder / "mlflow-ci.yaml", policy)


@pytest.fixture
def monorepo(tmp_path: Path) -> Path:
    """Three projects (one with a space in its path), a shared lib/ that two of them watch, a
    fourth project the feature branch deletes, and folders that are not projects; `main` holds
    it all and the branch `feature` is checked out."""
    repo = tmp_path / "mono repo"
    repo.mkdir()
    git(repo, "init", "-q")
    add_project(repo, "models/churn", watch=["lib/**"])
    add_project(repo, "models/fraud score", watch=["lib", "requirements/common.txt"])
    add_project(repo, "models/forecast")
    add_project(repo, "models/retired")
    write(repo / "lib" / "features" / "encode.py", "def encode(x):\n    return x\n")
    write(repo / "requirements" / "common.txt", "pandas\n")
    write(repo / "docs" / "index.md", "# docs\n")
    write(repo / "notes" / "MLproject", TINY_MLPROJECT)  # no policy: not a project
    write(repo / ".gitignore", "build/\n")
    add_project(repo, "build/models/copy")  # ignored: not a project
    commit_all(repo, "base")
    git(repo, "checkout", "-q", "-b", "feature")
    return repo


def projects(repo: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = run_cli("projects", str(repo), *args, cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def selected(repo: Path, since: str = "main") -> list[str]:
    return projects(repo, "--changed-since", since)["projects"]


def test_without_changed_since_every_project_is_listed(monorepo: Path) -> None:
    data = projects(monorepo)
    assert data["projects"] == ["models/churn", "models/forecast", "models/fraud score", "models/retired"]
    assert data["matrix"] == {
        "include": [
            {"project": "models/churn", "name": "churn"},
            {"project": "models/forecast", "name": "forecast"},
            {"project": "models/fraud score", "name": "fraud score"},
            {"project": "models/retired", "name": "retired"},
        ]
    }
    assert data["count"] == data["found"] == 4
    assert data["changed_since"] is None
    # An empty REF is what a workflow passes on an event without a base: every project.
    assert projects(monorepo, "--changed-since", "")["projects"] == data["projects"]


def test_a_change_in_one_project_selects_that_project(monorepo: Path) -> None:
    write(monorepo / "models" / "forecast" / "train.py", "print('better')\n")
    commit_all(monorepo, "tune forecast")
    data = projects(monorepo, "--changed-since", "main")
    assert data["projects"] == ["models/forecast"]
    assert data["matrix"] == {"include": [{"project": "models/forecast", "name": "forecast"}]}
    assert data["reasons"] == {"models/forecast": ["models/forecast/train.py"]}
    assert data["changed_since"] == "main"


def test_a_change_in_shared_code_selects_the_projects_that_watch_it(monorepo: Path) -> None:
    write(monorepo / "lib" / "features" / "encode.py", "def encode(x):\n    return -x\n")
    commit_all(monorepo, "shared change")
    data = projects(monorepo, "--changed-since", "main")
    assert data["projects"] == ["models/churn", "models/fraud score"]
    assert data["reasons"] == {
        "models/churn": ["lib/features/encode.py (watch: lib/**)"],
        "models/fraud score": ["lib/features/encode.py (watch: lib)"],
    }
    # A single watched file, too.
    git(monorepo, "checkout", "-q", "-b", "pin-only", "main")
    write(monorepo / "requirements" / "common.txt", "pandas<3\n")
    commit_all(monorepo, "pin")
    assert selected(monorepo) == ["models/fraud score"]


def test_a_deleted_project_is_not_selected(monorepo: Path) -> None:
    git(monorepo, "rm", "-q", "-r", "models/retired")
    commit_all(monorepo, "retire")
    data = projects(monorepo, "--changed-since", "main")
    assert data["projects"] == []
    assert data["matrix"] == {"include": []}
    assert data["count"] == 0
    assert data["changed_files"] == 3
    assert "models/retired" not in projects(monorepo)["projects"]


def test_paths_with_spaces_work(monorepo: Path) -> None:
    write(monorepo / "models" / "fraud score" / "data dir" / "a file.csv", "x\n1\n")
    commit_all(monorepo, "data")
    data = projects(monorepo, "--changed-since", "main")
    assert data["matrix"] == {"include": [{"project": "models/fraud score", "name": "fraud score"}]}
    assert data["reasons"]["models/fraud score"] == ["models/fraud score/data dir/a file.csv"]


def test_only_the_branchs_own_changes_count_merge_base(monorepo: Path) -> None:
    """`REF...HEAD`: what main did after the branch forked is not the branch's change."""
    write(monorepo / "lib" / "features" / "encode.py", "def encode(x):\n    return 2 * x\n")
    commit_all(monorepo, "feature: shared code")
    git(monorepo, "checkout", "-q", "main")
    write(monorepo / "models" / "forecast" / "train.py", "print('main moved on')\n")
    commit_all(monorepo, "main: forecast")
    git(monorepo, "checkout", "-q", "feature")
    assert selected(monorepo) == ["models/churn", "models/fraud score"]


def test_a_file_moved_out_of_a_project_touches_both(monorepo: Path) -> None:
    git(monorepo, "mv", "models/churn/train.py", "models/forecast/churn_train.py")
    commit_all(monorepo, "move")
    assert selected(monorepo) == ["models/churn", "models/forecast"]


def test_a_new_project_is_selected(monorepo: Path) -> None:
    add_project(monorepo, "teams/churn")
    commit_all(monorepo, "new")
    data = projects(monorepo, "--changed-since", "main")
    assert data["projects"] == ["teams/churn"]
    # Two projects called churn: each name takes the folder above it too, and stays unique.
    names = {e["project"]: e["name"] for e in projects(monorepo)["matrix"]["include"]}
    assert names["teams/churn"] == "teams-churn"
    assert names["models/churn"] == "models-churn"


def test_root_narrows_the_search_and_paths_stay_relative_to_the_repository(monorepo: Path) -> None:
    add_project(monorepo, "teams/churn", watch=["lib/**"])
    write(monorepo / "lib" / "features" / "encode.py", "def encode(x):\n    return x + 1\n")
    commit_all(monorepo, "team and lib")
    done = run_cli("projects", "teams", "--changed-since", "main", cwd=monorepo)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["projects"] == ["teams/churn"], "watch globs are relative to the repository root"
    assert data["found"] == 1


def test_step_outputs_for_a_matrix(monorepo: Path, tmp_path: Path) -> None:
    write(monorepo / "lib" / "x.py", "")
    commit_all(monorepo, "lib")
    out, summary = tmp_path / "github_output", tmp_path / "summary.md"
    env = {"GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary)}
    projects(monorepo, "--changed-since", "main", env=env)
    lines = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert set(lines) == {"matrix", "projects", "count"}
    assert json.loads(lines["matrix"]) == {
        "include": [{"project": "models/churn", "name": "churn"},
                    {"project": "models/fraud score", "name": "fraud score"}]
    }  # fmt: skip
    assert json.loads(lines["projects"]) == ["models/churn", "models/fraud score"]
    assert lines["count"] == "2"
    assert "| `models/fraud score` | fraud score | lib/x.py (watch: lib) |" in summary.read_text()


def test_an_empty_change_gives_an_empty_matrix_and_count_0(monorepo: Path, tmp_path: Path) -> None:
    write(monorepo / "docs" / "index.md", "# more docs\n")
    commit_all(monorepo, "docs")
    out = tmp_path / "github_output"
    data = projects(monorepo, "--changed-since", "main", env={"GITHUB_OUTPUT": str(out)})
    assert data["matrix"] == {"include": []}
    assert "count=0" in out.read_text().splitlines()


def test_a_ref_that_does_not_exist_is_exit_2(monorepo: Path) -> None:
    done = run_cli("projects", str(monorepo), "--changed-since", "origin/nope", cwd=monorepo)
    assert done.returncode == 2, done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert "--changed-since 'origin/nope' is not a commit of the repository" in line
    assert "fetch-depth: 0" in line
    assert done.stdout == ""
    done = run_cli("projects", str(monorepo), "--changed-since", "--output=/tmp/x", cwd=monorepo)
    assert done.returncode == 2, done.stderr


def test_not_a_git_repository_is_exit_2(tmp_path: Path) -> None:
    add_project(tmp_path / "plain", "p")
    done = run_cli("projects", str(tmp_path / "plain"), env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert "is not in a git repository" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_invalid_policy_is_exit_2_naming_the_file(monorepo: Path) -> None:
    write(monorepo / "models" / "forecast" / "mlflow-ci.yaml", "project: forecast\nwatch: [/etc/passwd]\n")
    commit_all(monorepo, "bad watch")
    done = run_cli("projects", str(monorepo), cwd=monorepo)
    assert done.returncode == 2, done.stderr
    assert "models/forecast/mlflow-ci.yaml:2" in done.stderr
    assert "not relative to the repository root" in done.stderr


def test_the_repository_root_can_be_a_project(tmp_path: Path) -> None:
    repo = tmp_path / "single"
    repo.mkdir()
    git(repo, "init", "-q")
    add_project(repo, ".")
    commit_all(repo, "base")
    write(repo / "README.md", "hi\n")
    commit_all(repo, "readme")
    data = projects(repo, "--changed-since", "HEAD~1")
    assert data["matrix"] == {"include": [{"project": ".", "name": "root"}]}


# --- units -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("lib/**", "lib/a.py", True),
        ("lib/**", "lib/x/y/z.py", True),
        ("lib", "lib/x/y/z.py", True),
        ("lib", "library/x.py", False),
        ("lib/*.py", "lib/a.py", True),
        ("lib/*.py", "lib/x/a.py", False),
        ("**/*.proto", "a/b/c.proto", True),
        ("**/*.proto", "c.proto", True),
        ("requirements/common.txt", "requirements/common.txt", True),
        ("requirements/common.txt", "requirements/common.txt.bak", False),
        ("src/**/model.py", "src/model.py", True),
        ("src/**/model.py", "src/a/b/model.py", True),
        ("shared code/**", "shared code/x y.py", True),
        ("**", "anything/at/all", True),
    ],
)
def test_glob_matches(pattern: str, path: str, hit: bool) -> None:
    assert glob_matches(pattern, path) is hit


def test_unique_names() -> None:
    assert unique_names(["models/a", "team/a", "b", ".", "x/y/a"]) == {
        "models/a": "models-a", "team/a": "team-a", "b": "b", ".": "root", "x/y/a": "y-a",
    }  # fmt: skip
    # Unsafe characters in artifact names become "_"; what is still shared gets a number.
    assert unique_names(["a:b", "a/b", "a-b"]) == {"a:b": "a_b", "a/b": "b", "a-b": "a-b"}
    assert unique_names(["p/a-b", "q/a/b"]) == {"p/a-b": "a-b", "q/a/b": "b"}
    assert unique_names(["a-b", "a/b", "x/a-b"]) == {"a-b": "a-b", "a/b": "b", "x/a-b": "x-a-b"}
    assert unique_names(["a:b", "a_b"]) == {"a:b": "a_b", "a_b": "a_b-2"}


@pytest.mark.parametrize(
    ("watch", "why"),
    [
        ("/lib/**", "not relative to the repository root"),
        ("C:/lib", "not relative to the repository root"),
        ("lib\\\\x", "not relative to the repository root"),
        ("../lib", "has a . or .. folder"),
        ("", "is empty"),
    ],
)
def test_watch_must_be_relative_globs(tmp_path: Path, watch: str, why: str) -> None:
    policy = tmp_path / "mlflow-ci.yaml"
    policy.write_text(f'project: p\nwatch: ["{watch}"]\n', encoding="utf-8")
    with pytest.raises(PolicyError, match=why):
        load_policy(policy)


def test_watch_is_normalised(tmp_path: Path) -> None:
    policy = tmp_path / "mlflow-ci.yaml"
    policy.write_text('project: p\nwatch: ["./lib/", "requirements/*.txt"]\n', encoding="utf-8")
    assert load_policy(policy).policy.watch == ["lib", "requirements/*.txt"]
    policy.write_text("project: p\n", encoding="utf-8")
    assert load_policy(policy).policy.watch == []
