"""The MLflow projects of a repository, and those a change touches: ``mlflow-ci projects``.

A project is a folder holding both ``MLproject`` and ``mlflow-ci.yaml``. A change touches a
project when it changes a file inside the project's folder, or a file that the project's policy
lists under ``watch:`` (globs relative to the repository root: shared code, common
requirements). The change is ``git diff --name-only REF...HEAD``: what HEAD changed since it
forked from REF (the merge base, as a pull request shows it), renames counted as a deletion plus
an addition so that a file moved out of a project touches it too. Only projects that exist at
HEAD are found, so a deleted project is never selected.

The answer is shaped for a GitHub Actions matrix: ``matrix`` is ``{"include": [{"project":
"models/a", "name": "a"}, ...]}``, fed whole to ``strategy.matrix: ${{ fromJSON(...) }}`` (any
other top-level key would become a matrix dimension, so nothing else goes in it); ``projects``
is the plain list of folders and ``count`` how many. GitHub refuses a matrix with no entries, so
a caller skips the matrix job with ``if: needs.<job>.outputs.count != '0'``. ``name`` is short
and unique among the repository's projects (the fewest trailing folder names that tell the
project apart, joined by ``-``), usable in artifact and job names.
"""

from __future__ import annotations

import fnmatch
import json
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mlflow_ci.config.base import POLICY_FILENAME
from mlflow_ci.config.loader import load_policy
from mlflow_ci.core import output, proc
from mlflow_ci.core.errors import CommandFailed, ConfigError

MLPROJECT = "mlproject"  # MLflow finds the file whatever its case
#: Characters GitHub refuses in artifact names (and "/" separates folders).
_UNSAFE_IN_NAMES = set('":<>|*?\r\n\\/')


@dataclass(frozen=True)
class Project:
    path: str  # relative to the repository root, with "/"; "." for the root itself
    name: str
    watch: tuple[str, ...] = ()

    def owns(self, changed: str) -> bool:
        return self.path in (".", changed) or changed.startswith(self.path + "/")


@dataclass(frozen=True)
class MatrixEntry:
    project: str
    name: str


@dataclass
class Selection:
    found: list[Project]
    selected: list[Project]
    reasons: dict[str, list[str]] = field(default_factory=dict)
    changed_since: str | None = None
    changed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "matrix": {"include": [{"project": p.path, "name": p.name} for p in self.selected]},
            "projects": [p.path for p in self.selected],
            "count": len(self.selected),
            "found": len(self.found),
            "changed_since": self.changed_since,
            "changed_files": self.changed,
            "reasons": self.reasons,
        }


# --- globs ---------------------------------------------------------------------------------------


def glob_matches(pattern: str, path: str) -> bool:
    """Whether ``pattern`` (``*`` within one folder, ``**`` any number of folders) matches
    ``path`` or a folder above it; both relative to the repository root, with ``/``."""
    wanted = pattern.strip("/").split("/")
    parts = path.split("/")
    return any(_match(wanted, parts[:end]) for end in range(len(parts), 0, -1))


def _match(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _match(rest, parts[1:])


# --- git -----------------------------------------------------------------------------------------


def _git(top: Path | str, *args: str) -> proc.Completed:
    return proc.run(["git", "-C", str(top), *args], check=False, timeout=300,
                    env=proc.base_env({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}))  # fmt: skip


def repository_root(folder: Path) -> Path:
    """The top of the git work tree holding ``folder``; exit 2 when it is not in one."""
    done = _git(folder, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        why = done.output.strip().splitlines()[-1] if done.output.strip() else f"exit {done.returncode}"
        raise ConfigError(
            f"{folder} is not in a git repository ({why}); mlflow-ci projects reads the "
            "repository's files and history with git."
        )
    return Path(done.output.strip().splitlines()[-1])


def repository_files(top: Path) -> list[str]:
    """Files of the work tree, tracked or new but not ignored, relative to ``top``."""
    done = _git(top, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if done.returncode != 0:
        raise CommandFailed(
            f"git ls-files failed in {top}: {proc.tail(done.output, 5)}", returncode=done.returncode
        )
    return [rel for rel in dict.fromkeys(done.output.split("\0")) if rel and (top / rel).is_file()]


def changed_files(top: Path, ref: str) -> list[str]:
    """``git diff --name-only REF...HEAD``: the files HEAD changed since its merge base with REF."""
    if ref.startswith("-"):
        raise ConfigError(f"--changed-since {ref!r} is not a git ref (it starts with '-').")
    if _git(top, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        raise ConfigError(
            f"--changed-since {ref!r} is not a commit of the repository at {top}: fetch it first "
            "(in GitHub Actions, actions/checkout with fetch-depth: 0)."
        )
    # Written to a file, not read from the output: proc.run merges stderr into it, and a warning
    # must never read as a changed path.
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-diff-") as tmp:
        listing = Path(tmp) / "names"
        done = _git(top, "diff", "--name-only", "-z", "--no-renames", "--no-ext-diff",
                    f"--output={listing}", f"{ref}...HEAD", "--")  # fmt: skip
        if done.returncode != 0:
            raise ConfigError(
                f"git cannot compare {ref!r} with HEAD in {top} ({proc.tail(done.output, 3).strip()}); "
                "a shallow clone lacks the merge base: fetch the history (actions/checkout with "
                "fetch-depth: 0)."
            )
        names = listing.read_bytes().decode("utf-8", errors="surrogateescape")
    return [name for name in names.split("\0") if name]


# --- finding and selecting -----------------------------------------------------------------------


def find_projects(root: Path) -> tuple[Path, list[Project]]:
    """The repository's top and every project under ``root`` (policies loaded, names given)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder.")
    top = repository_root(root)
    below = Path(root).resolve().relative_to(top.resolve()).as_posix()
    files = repository_files(top)
    present = set(files)
    folders = set()
    for rel in files:
        file = PurePosixPath(rel)
        if file.name.lower() != MLPROJECT:
            continue
        folder = str(file.parent)  # "." for the root
        if (POLICY_FILENAME if folder == "." else f"{folder}/{POLICY_FILENAME}") not in present:
            continue
        if below in (".", folder) or folder.startswith(below + "/"):
            folders.add(folder)
    names = unique_names(sorted(folders))
    projects = []
    for folder in sorted(folders):
        policy = load_policy(top / folder / POLICY_FILENAME).policy
        projects.append(Project(path=folder, name=names[folder], watch=tuple(policy.watch)))
    return top, projects


def unique_names(folders: Iterable[str]) -> dict[str, str]:
    """A short name per folder: the fewest trailing folder names (joined by ``-``) that no other
    folder shares; the root is ``root``; unsafe characters become ``_``."""
    folders = list(folders)
    parts = {f: ([] if f == "." else f.split("/")) for f in folders}

    def candidate(folder: str, depth: int) -> str:
        segs = parts[folder]
        raw = "-".join(segs[-depth:]) if segs else "root"
        return "".join("_" if c in _UNSAFE_IN_NAMES else c for c in raw)

    depth = dict.fromkeys(folders, 1)
    while True:
        by_name: dict[str, list[str]] = {}
        for folder in folders:
            by_name.setdefault(candidate(folder, depth[folder]), []).append(folder)
        clashes = [group for group in by_name.values() if len(group) > 1]
        grown = False
        for group in clashes:
            for folder in group:
                if depth[folder] < len(parts[folder]):
                    depth[folder] += 1
                    grown = True
        if not grown:
            break
    names: dict[str, str] = {}
    taken: set[str] = set()
    for folder in folders:  # what is still shared (e.g. "a/b" and "a-b") gets a number
        name, n = candidate(folder, depth[folder]), 1
        while name in taken:
            n += 1
            name = f"{candidate(folder, depth[folder])}-{n}"
        taken.add(name)
        names[folder] = name
    return names


def select(projects: Sequence[Project], changed: Sequence[str]) -> tuple[list[Project], dict[str, list[str]]]:
    """The projects ``changed`` touches, with why: the changed files in them, or the watched ones."""
    selected, reasons = [], {}
    for project in projects:
        why = [path for path in changed if project.owns(path)]
        for path in changed:
            if not project.owns(path):
                for pattern in project.watch:
                    if glob_matches(pattern, path):
                        why.append(f"{path} (watch: {pattern})")
                        break
        if why:
            selected.append(project)
            reasons[project.path] = why
    return selected, reasons


def projects_command(*, root: Path, changed_since: str | None) -> int:
    """Print (JSON) the projects under ``root`` that changed since ``changed_since`` (all
    without it); set the step outputs ``matrix``, ``projects`` and ``count``."""
    top, found = find_projects(root)
    ref = changed_since or None
    if ref is None:
        selection = Selection(found=found, selected=list(found),
                              reasons={p.path: ["listed: no --changed-since"] for p in found})  # fmt: skip
    else:
        changed = changed_files(top, ref)
        selected, reasons = select(found, changed)
        selection = Selection(found, selected, reasons, changed_since=ref, changed=len(changed))
    data = selection.to_dict()
    compact = {key: json.dumps(data[key], separators=(",", ":")) for key in ("matrix", "projects")}
    output.set_output("matrix", compact["matrix"])
    output.set_output("projects", compact["projects"])
    output.set_output("count", str(data["count"]))
    output.write_step_summary(_summary_markdown(selection))
    output.emit_json(data)
    output.info(_summary_line(selection))
    return 0


def _summary_line(selection: Selection) -> str:
    n, total = len(selection.selected), len(selection.found)
    if selection.changed_since is None:
        head = f"{total} MLflow project{'s' if total != 1 else ''} found"
    else:
        head = (f"{n} of {total} MLflow project{'s' if total != 1 else ''} touched by "
                f"{selection.changed} changed file{'s' if selection.changed != 1 else ''} since {selection.changed_since}")  # fmt: skip
    lines = [head + (":" if selection.selected else "; nothing to check.")]
    for project in selection.selected:
        why = selection.reasons.get(project.path, [])
        shown = ", ".join(why[:3]) + (f" and {len(why) - 3} more" if len(why) > 3 else "")
        lines.append(f"  {project.path} ({project.name}): {shown}")
    return "\n".join(lines)


def _summary_markdown(selection: Selection) -> str:
    lines = ["### mlflow-ci projects", "", _summary_line(selection).splitlines()[0]]
    if selection.selected:
        lines += ["", "| project | name | why |", "|---|---|---|"]
        for project in selection.selected:
            why = selection.reasons.get(project.path, [])
            shown = ", ".join(why[:5]) + (f" and {len(why) - 5} more" if len(why) > 5 else "")
            lines.append(f"| `{_cell(project.path)}` | {_cell(project.name)} | {_cell(shown)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")


# --- reading the matrix back (the summary comment) -------------------------------------------------


def parse_matrix(text: str) -> list[MatrixEntry]:
    """The entries of a ``matrix`` output of ``mlflow-ci projects`` (``{"include": [...]}``)."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    include = data.get("include") if isinstance(data, dict) else None
    if not isinstance(include, list):
        raise ConfigError(
            f'--matrix is not the `matrix` output of mlflow-ci projects ({{"include": [...]}}): {text[:200]!r}.'
        )
    entries: list[MatrixEntry] = []
    for item in include:
        project = item.get("project") if isinstance(item, dict) else None
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(project, str) or not isinstance(name, str) or not project:
            raise ConfigError(f"--matrix has an entry without a project and a name: {item!r}.")
        if not name or name in (".", "..") or set(name) & _UNSAFE_IN_NAMES:
            raise ConfigError(f"--matrix names project {project!r} {name!r}, which is not a folder name.")
        if any(e.name == name for e in entries):
            raise ConfigError(f"--matrix names two projects {name!r}; names must be unique.")
        entries.append(MatrixEntry(project=project, name=name))
    return entries
