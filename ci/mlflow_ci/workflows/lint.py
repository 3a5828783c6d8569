"""Lint the GitHub Actions workflows: four external linters plus this project's own rules.

    python -m mlflow_ci.workflow_lint [--root DIR] [FILES_OR_DIRS...]

External tools (all offline, installed by the ``lint`` extra):

- actionlint (with shellcheck for ``run:`` scripts; missing shellcheck is an error, not a skip),
- zizmor ``--offline`` with its default ("regular") persona and no severity floor. The stricter
  personas flag only the service images in ci.yml, which cannot be pinned by digest offline,
- check-jsonschema against the vendored GitHub workflow schema,
- yamllint (``--strict``) with ``on:`` allowed as a key.

Project rules (:func:`rule_findings`; tests call them one by one):

- workflows are thin: every ``run:`` is one command calling an existing nox session or an
  existing ``mlflow-ci`` command with options it has, or one of :data:`BOOTSTRAP` verbatim,
- no ``${{ }}`` in ``run:``: inputs reach scripts through ``env:``, and every ``$VAR`` a script
  reads is set by an ``env:`` block (or by the runner: ``GITHUB_*``, ``RUNNER_*``),
- every remote ``uses:`` is pinned by a 40-hex commit SHA with the version in a trailing comment,
- top-level ``permissions`` is present and grants no write; ``write`` appears only where
  :data:`WRITE_ALLOWED` says.

Exit codes: 0 clean, 1 findings, 3 a tool is missing or failed to run.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from mlflow_ci.core import output
from mlflow_ci.core.errors import EXIT_CHECK_FAILED, EXIT_OK, InfraError, MlflowCiError
from mlflow_ci.core.proc import base_env, run

#: The only ``run:`` commands that are neither nox nor mlflow-ci: installing those two.
BOOTSTRAP = frozenset({
    'python -m pip install "$MLFLOW_CI_SPEC"',
    "python -m pip install nox",
    "bash .ci/run",  # this repository's CI: service setup, then `nox -s tests`
})  # fmt: skip

#: Where a ``write`` permission may appear: (workflow file name, job id) -> scopes. A job that
#: calls pr-checks.yml must grant what the called comment job uses (a caller's permissions cap
#: the called workflow's), so such jobs get the comment job's scopes too (:func:`_is_pr_checks_call`).
WRITE_ALLOWED: dict[tuple[str, str], frozenset[str]] = {
    ("pr-checks.yml", "comment"): frozenset({"pull-requests"}),
}
PR_CHECKS_WRITE = WRITE_ALLOWED[("pr-checks.yml", "comment")]

# yamllint reads -d as YAML, so JSON will do. `on:` is a key, not a truthy value.
YAMLLINT_CONFIG = json.dumps({
    "extends": "default",
    "rules": {"truthy": {"check-keys": False}, "line-length": {"max": 120}, "document-start": "disable"},
})  # fmt: skip
SHA = re.compile(r"^[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v?\d+(\.\d+)*\b")
SHELL_OPERATORS = re.compile(r"^[;&|<>()]+$")
SHELL_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
#: Set by the runner in every job; anything else a script reads must come from an env: block.
RUNNER_VARS = re.compile(r"^(GITHUB_\w+|RUNNER_\w+|CI|HOME|PATH|PWD)$")


@dataclass(frozen=True)
class Finding:
    file: Path
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.message}"


# --------------------------------------------------------------------------------------------
# Loading


def workflow_files(paths: Iterable[Path]) -> list[Path]:
    """Workflow files among ``paths`` (a folder contributes its ``*.yml``/``*.yaml``)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file())
        else:
            files.append(path)
    return files


def load_workflow(path: Path) -> dict[str, Any]:
    """The workflow as a mapping; PyYAML reads the key ``on`` as ``True``, which is put back."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InfraError(f"Cannot read workflow {path}: {exc}") from None
    if not isinstance(data, dict):
        return {}
    if True in data:
        data["on"] = data.pop(True)
    return data


def _jobs(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    jobs = data.get("jobs")
    if isinstance(jobs, dict):
        for job_id, job in jobs.items():
            if isinstance(job, dict):
                yield str(job_id), job


def _steps(job: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    steps = job.get("steps")
    if isinstance(steps, list):
        for index, step in enumerate(steps):
            if isinstance(step, dict):
                label = step.get("name") or step.get("id") or step.get("uses") or f"step {index + 1}"
                yield str(label), step


# --------------------------------------------------------------------------------------------
# What run: steps may call


def nox_sessions(noxfile: Path) -> set[str]:
    """Session names defined in ``noxfile`` (read with ast: `nox --list --json` lists only defaults)."""
    try:
        tree = ast.parse(noxfile.read_text(encoding="utf-8"), filename=str(noxfile))
    except OSError:
        return set()
    sessions = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for deco in node.decorator_list:
            call = deco if isinstance(deco, ast.Call) else None
            target = call.func if call else deco
            if ast.unparse(target) not in ("nox.session", "session"):
                continue
            name = node.name
            for kw in call.keywords if call else []:
                if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                    name = str(kw.value.value)
            sessions.add(name)
    return sessions


def cli_commands(cli: click.Group) -> dict[tuple[str, ...], Any]:
    """Every leaf command of the ``mlflow-ci`` click group (given by the CLI layer, which this
    package may not import), by command path."""
    found: dict[tuple[str, ...], Any] = {}

    def walk(prefix: tuple[str, ...], command: click.Command) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk((*prefix, name), sub)
        else:
            found[prefix] = command

    walk((), cli)
    return found


def _split(command: str) -> list[str] | None:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:
        return None


def check_command(command: str, *, sessions: set[str], commands: dict[tuple[str, ...], Any]) -> str | None:
    """Why ``command`` (one ``run:`` script) breaks the thin-workflow rule, or None when it is fine."""
    lines = [
        ln
        for ln in command.replace("\\\n", " ").splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]
    if len(lines) != 1:
        return f"a run: step must be one command, found {len(lines)} lines"
    line = " ".join(lines[0].split())
    if line in BOOTSTRAP:
        return None
    tokens = _split(line)
    if not tokens:
        return f"cannot parse {line!r}"
    if any(SHELL_OPERATORS.match(t) for t in tokens):
        return f"{line!r} uses shell operators; put the logic in the package and call it"
    if tokens[:3] == ["python", "-m", "nox"]:
        tokens = ["nox", *tokens[3:]]
    if tokens[:3] == ["python", "-m", "mlflow_ci"]:
        tokens = ["mlflow-ci", *tokens[3:]]
    if tokens[0] == "nox":
        return _check_nox(tokens[1:], sessions)
    if tokens[0] == "mlflow-ci":
        return _check_mlflow_ci(tokens[1:], commands)
    allowed = " or ".join(repr(b) for b in sorted(BOOTSTRAP))
    return f"{line!r} is neither `nox -s SESSION` nor `mlflow-ci COMMAND` (nor the bootstrap {allowed})"


def _check_nox(args: list[str], sessions: set[str]) -> str | None:
    named: list[str] = []
    taking = False
    for arg in args:
        if arg == "--":
            break
        if arg in ("-s", "--session", "--sessions", "-e"):
            taking = True
            continue
        if arg.startswith("--session=") or arg.startswith("--sessions="):
            named += arg.split("=", 1)[1].split(",")
            taking = False
            continue
        if arg.startswith("-"):
            taking = False
            continue
        if taking:
            named.append(arg)
    missing = [s for s in named if s not in sessions]
    if missing:
        return (
            f"nox session(s) {', '.join(missing)} not in noxfile.py (it has: {', '.join(sorted(sessions))})"
        )
    return None


def _check_mlflow_ci(args: list[str], commands: dict[tuple[str, ...], Any]) -> str | None:
    path: tuple[str, ...] = ()
    rest = list(args)
    while rest and any(key[: len(path) + 1] == (*path, rest[0]) for key in commands):
        path = (*path, rest.pop(0))
    command = commands.get(path)
    if command is None:
        known = ", ".join(" ".join(k) for k in sorted(commands))
        return f"`mlflow-ci {' '.join(args[: len(path) + 1])}` is not a mlflow-ci command (known: {known})"
    options = {"--help", "-h"}
    for param in command.params:
        options.update(getattr(param, "opts", []))
        options.update(getattr(param, "secondary_opts", []))
    for arg in rest:
        if arg == "--":
            break
        if arg.startswith("-") and arg != "-":
            name = arg.split("=", 1)[0]
            if name not in options:
                return f"`mlflow-ci {' '.join(path)}` has no option {name}"
    return None


def check_run_steps(
    files: Iterable[Path], *, noxfile: Path, commands: dict[tuple[str, ...], Any]
) -> list[Finding]:
    """Every ``run:`` calls nox, mlflow-ci or the bootstrap, and never interpolates ``${{ }}``."""
    sessions = nox_sessions(noxfile)
    findings = []
    for path in files:
        data = load_workflow(path)
        for job_id, job in _jobs(data):
            for label, step in _steps(job):
                script = step.get("run")
                if script is None:
                    continue
                where = f"job {job_id}, step {label!r}"
                script = str(script)
                if "${{" in script:
                    findings.append(
                        Finding(path, where, "`${{ }}` in run: pass the value through env: instead")
                    )
                    continue
                problem = check_command(script, sessions=sessions, commands=commands)
                if problem:
                    findings.append(Finding(path, where, problem))
                defined = {*env_names(data), *env_names(job), *env_names(step)}
                for name in sorted(set(SHELL_VAR.findall(script)) - defined):
                    if not RUNNER_VARS.match(name):
                        findings.append(Finding(path, where, f"${name} is not set by any env: block"))
    return findings


def env_names(block: dict[str, Any]) -> set[str]:
    env = block.get("env")
    return {str(k) for k in env} if isinstance(env, dict) else set()


# --------------------------------------------------------------------------------------------
# Pins and permissions


def check_pins(files: Iterable[Path]) -> list[Finding]:
    """Remote actions and reusable workflows pinned by commit SHA, with the version in a comment."""
    findings = []
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        for where, ref, line in uses_refs(path):
            problem = _pin_problem(ref, lines[line])
            if problem:
                findings.append(Finding(path, where, problem))
    return findings


def uses_refs(path: Path) -> list[tuple[str, str, int]]:
    """Every ``uses:`` value in the file with where it is and its 0-based line, in file order."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise InfraError(f"Cannot read workflow {path}: {exc}") from None
    found: list[tuple[str, str, int]] = []

    def walk(node: yaml.Node, trail: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == "uses" and isinstance(value, yaml.ScalarNode):
                    found.append((_where(trail), value.value, value.start_mark.line))
                else:
                    walk(value, (*trail, str(key.value)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*trail, str(index + 1)))

    if root is not None:
        walk(root, ())
    return found


def _where(trail: tuple[str, ...]) -> str:
    if len(trail) >= 2 and trail[0] == "jobs":
        if len(trail) >= 4 and trail[2] == "steps":
            return f"job {trail[1]}, step {trail[3]}"
        return f"job {trail[1]}"
    return ".".join(trail) or "top level"


def _pin_problem(ref: str, line: str) -> str | None:
    if ref.startswith(("./", "$/")):
        return None
    if ref.startswith("docker://"):
        return None if "@sha256:" in ref else f"{ref} is not pinned by digest (@sha256:...)"
    name, _, version = ref.partition("@")
    if not SHA.match(version):
        return f"{ref} is not pinned by a 40-hex commit SHA"
    if not VERSION_COMMENT.search(line.partition(ref)[2]):
        return f"{name}@{version[:7]}… needs the version in a trailing comment (`# v1.2.3`)"
    return None


def _is_pr_checks_call(job: dict[str, Any]) -> bool:
    ref = str(job.get("uses") or "")
    return ref.split("@", maxsplit=1)[0].endswith(".github/workflows/pr-checks.yml")


def _writes(perms: Any) -> set[str] | None:
    """Scopes granted ``write``; None for the ``write-all``/``read-all`` shorthands."""
    if perms in ("write-all", "read-all"):
        return None
    if isinstance(perms, dict):
        return {str(k) for k, v in perms.items() if v == "write"}
    return set()


def check_permissions(files: Iterable[Path]) -> list[Finding]:
    """Top-level ``permissions`` present and read-only at most; job writes only where allowed."""
    findings = []
    for path in files:
        data = load_workflow(path)
        if "permissions" not in data:
            findings.append(Finding(path, "top level", "no `permissions:`; start from `permissions: {}`"))
        else:
            writes = _writes(data["permissions"])
            if writes is None or writes:
                findings.append(
                    Finding(path, "top level", f"grants {data['permissions']!r}; use {{}} and per-job scopes")
                )
        for job_id, job in _jobs(data):
            if "permissions" not in job:
                continue
            writes = _writes(job["permissions"])
            if writes is None:
                findings.append(
                    Finding(path, f"job {job_id}", f"{job['permissions']!r}: list the scopes it needs")
                )
                continue
            allowed = set(WRITE_ALLOWED.get((path.name, job_id), frozenset()))
            if _is_pr_checks_call(job):
                allowed |= PR_CHECKS_WRITE
            extra = sorted(writes - allowed)
            if extra:
                findings.append(
                    Finding(path, f"job {job_id}", f"write access to {', '.join(extra)} is not allowed here")
                )
    return findings


def rule_findings(
    files: Sequence[Path], *, noxfile: Path, commands: dict[tuple[str, ...], Any]
) -> list[Finding]:
    return [
        *check_run_steps(files, noxfile=noxfile, commands=commands),
        *check_pins(files),
        *check_permissions(files),
    ]


# --------------------------------------------------------------------------------------------
# External linters


def _tool(name: str) -> str:
    """The tool next to this Python (a nox or virtual env) first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise InfraError(
            f"{name} is not installed, so the workflows cannot be linted.",
            hint="Install the lint tools: pip install 'mlflow-ci[lint]' (or run `nox -s lint`).",
        )
    return found


def tool_commands(files: Sequence[Path]) -> list[tuple[str, list[str]]]:
    names = [str(f) for f in files]
    return [
        ("actionlint", [_tool("actionlint"), "-no-color", "-shellcheck", _tool("shellcheck"), *names]),
        (
            "zizmor",
            [_tool("zizmor"), "--offline", "--no-progress", "--color", "never", "--format", "plain", *names],
        ),
        (
            "check-jsonschema",
            [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *names],
        ),
        ("yamllint", [_tool("yamllint"), "--strict", "-f", "parsable", "-d", YAMLLINT_CONFIG, *names]),
    ]


def run_linters(files: Sequence[Path], *, root: Path) -> list[str]:
    """Run each external linter; print its findings; return the names of those that failed."""
    failed = []
    env = base_env({"NO_COLOR": "1"})
    for name, argv in tool_commands(files):
        with output.step(name):
            done = run(argv, env=env, cwd=root, check=False, timeout=300)
            if done.returncode != 0:
                failed.append(name)
                output.info(done.output.rstrip() or f"{name} exited with code {done.returncode}")
            else:
                output.info(f"{name}: ok")
    return failed


def main(argv: Sequence[str] | None = None, *, cli: click.Group) -> int:
    """The linters and rules; ``cli`` is the ``mlflow-ci`` group whose commands ``run:`` steps
    may call (the entry point, :mod:`mlflow_ci.workflow_lint`, passes it in)."""
    parser = argparse.ArgumentParser(
        prog="python -m mlflow_ci.workflow_lint", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "paths", nargs="*", type=Path, help="workflow files or folders (default: ROOT/.github/workflows)"
    )
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root holding noxfile.py")
    parser.add_argument(
        "--rules-only", action="store_true", help="only this project's rules, no external tools"
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        files = workflow_files(args.paths or [root / ".github" / "workflows"])
        if not files:
            output.error(f"no workflow files found under {', '.join(map(str, args.paths or [root]))}")
            return EXIT_CHECK_FAILED
        failed = [] if args.rules_only else run_linters(files, root=root)
        with output.step("mlflow-ci workflow rules"):
            findings = rule_findings(files, noxfile=root / "noxfile.py", commands=cli_commands(cli))
            for finding in findings:
                output.info(str(finding))
            if findings:
                failed.append("mlflow-ci workflow rules")
            else:
                output.info("mlflow-ci workflow rules: ok")
    except MlflowCiError as exc:
        output.error(str(exc), title=type(exc).__name__)
        return exc.exit_code
    if failed:
        output.error(f"workflow lint failed: {', '.join(failed)} ({len(files)} file(s))")
        return EXIT_CHECK_FAILED
    output.info(f"workflow lint: {len(files)} file(s) clean")
    return EXIT_OK
