"""``mlflow-ci policy init --from-runs EXPERIMENT``: a starting policy learned from the runs an
experiment already has, so an existing project adopts mlflow-ci step by step.

What every run already does is required and enforced: the tags on every run, the params and
metrics every run logs, a naming template every name fits (when one obviously does). Where the
runs fall short of mlflow-ci's conventions (names MLflow generated, no dataset input, no model)
the family keeps mlflow-ci's default requirement at ``warn``: the first pull request passes and
its report lists what is still missing. Which families pass is decided by the real conventions
(:data:`mlflow_ci.checks.conventions.CONVENTIONS`) run on the runs, so ``mlflow-ci conventions``
passes on the runs the policy was learned from.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_ci.checks.conventions import CONVENTIONS, FAMILY
from mlflow_ci.config import FAMILIES, POLICY_FILENAME, Naming, Policy, Tags, load_policy
from mlflow_ci.config.base import NAME_RE
from mlflow_ci.core import output
from mlflow_ci.core.errors import ConfigError, InfraError, PolicyError
from mlflow_ci.core.redact import redact
from mlflow_ci.core.report import Check
from mlflow_ci.mlflowio import tracking

SYSTEM_TAG_PREFIXES = ("mlflow.", "mlflow_ci.")

# Placeholders a learned run template may use, written into naming.placeholders.
LEARNED_PLACEHOLDERS = {"n": r"\d+", "word": "[a-z]+", "Word": "[A-Za-z]+"}
_TOKEN = re.compile(r"[A-Za-z]+|\d+|[^A-Za-z\d]+")
_GENERATED = re.compile(r"([a-z]+)-([a-z]+)-(\d+)")


@dataclass
class Draft:
    """What the runs show, and the policy it becomes."""

    experiment: str
    project: str
    runs: int
    left_out: int
    experiment_template: str
    run_template: str
    placeholders: dict[str, str]
    tags: list[str] | None  # None: mlflow-ci's default list (the runs share no tag)
    params: list[str]
    metrics: list[str]
    model_artifact_path: str
    levels: dict[str, str] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)  # family -> what fails, for warn families

    def policy_data(self, levels: dict[str, str] | None = None) -> dict[str, Any]:
        naming: dict[str, Any] = {"experiment": self.experiment_template, "run": self.run_template}
        if self.placeholders:
            naming["placeholders"] = self.placeholders
        data: dict[str, Any] = {
            "version": 1,
            "project": self.project,
            "levels": levels if levels is not None else self.levels,
            "naming": naming,
            "smoke": {
                "required_params": self.params,
                "required_metrics": self.metrics,
                "model_artifact_path": self.model_artifact_path,
            },
        }
        if self.tags is not None:
            data["tags"] = {"required": self.tags}
        return data


# --------------------------------------------------------------------------------------------
# Learning from names


def generated_name(name: str) -> bool:
    """A run name MLflow made up (``bold-fox-123``: an adjective, a noun, a number)."""
    m = _GENERATED.fullmatch(name)
    if not m:
        return False
    try:  # MLflow's own word lists, when this MLflow still has them where we look
        from mlflow.utils.name_utils import _GENERATOR_NOUNS, _GENERATOR_PREDICATES
    except ImportError:  # pragma: no cover - the shape alone then
        return True
    return m.group(1) in _GENERATOR_PREDICATES and m.group(2) in _GENERATOR_NOUNS


def learn_run_template(names: list[str], project: str) -> tuple[str, dict[str, str]] | str:
    """A run template every name fits, with the placeholders it needs, when one obviously does;
    otherwise why not (a sentence).

    Names are cut into words, numbers and separators; every name must have the same shape. A
    number becomes ``{n}``, a word that differs between runs ``{word}``; a template needs a fixed
    word, or it would fit any name of that shape (as ``{word}-{word}-{n}`` fits MLflow's).
    """
    default = Naming()
    if names and all(re.match(default.pattern("run", project), n) for n in names):
        return default.run, {}
    if not names or not all(names):
        return "some runs have no name"
    generated = [n for n in names if generated_name(n)]
    if generated:
        return f"{len(generated)} of {len(names)} runs have names MLflow generated (e.g. {generated[0]!r})"
    if len(names) < 2 and not any(c.isdigit() for c in names[0]):
        return "one run is too few to see a naming convention"
    if any(c in n for n in names for c in "{}"):
        return "the runs' names contain braces, which templates use for placeholders"
    tokens = [_TOKEN.findall(n) for n in names]
    shape = [_kind(t) for t in tokens[0]]
    if any([_kind(t) for t in ts] != shape for ts in tokens):
        return f"the runs' names have different shapes (e.g. {names[0]!r} and {_odd_one(names, tokens, shape)!r})"
    parts, used = [], {}
    for i, kind in enumerate(shape):
        values = {ts[i] for ts in tokens}
        if kind == "sep":
            if len(values) > 1:
                return f"the runs' names differ in their separators (e.g. {sorted(values)[:2]})"
            parts.append(values.pop())
        elif kind == "num":
            parts.append("{n}")
            used["n"] = LEARNED_PLACEHOLDERS["n"]
        elif len(values) == 1:
            parts.append(values.pop())
        else:
            word = "word" if all(v.islower() for v in values) else "Word"
            parts.append("{" + word + "}")
            used[word] = LEARNED_PLACEHOLDERS[word]
    template = "".join(parts)
    if not any(_kind(t) == "word" for t in _TOKEN.findall(re.sub(r"{\w+}", "-", template))):
        return f"the only template the names fit, {template!r}, has no fixed word, so it would fit any name"
    return template, used


def _kind(token: str) -> str:
    return "word" if token[0].isalpha() else "num" if token[0].isdigit() else "sep"


def _odd_one(names: list[str], tokens: list[list[str]], shape: list[str]) -> str:
    return next(n for n, ts in zip(names, tokens, strict=True) if [_kind(t) for t in ts] != shape)


def learn_experiment_template(name: str, project: str) -> str | None:
    """mlflow-ci's default when the experiment's name fits it, ``{project}`` when it is the
    project, else the name itself (a template without placeholders); None for a name with braces."""
    default = Naming()
    if re.match(default.pattern("experiment", project), name):
        return default.experiment
    if name == project:
        return "{project}"
    return None if ("{" in name or "}" in name) else name


def project_from(experiment: str) -> str:
    """The project a name like ``exp_churn_20260101`` (or just ``churn model``) stands for."""
    m = re.fullmatch(r"exp_(.+)_\d{4}-?\d{2}-?\d{2}", experiment)
    base = m.group(1) if m else experiment
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-_.")
    return cleaned if re.match(NAME_RE, cleaned) else "project"


# --------------------------------------------------------------------------------------------
# Learning from runs


def _on_every_run(sets: Iterable[set[str]]) -> list[str]:
    sets = list(sets)
    return sorted(set.intersection(*sets)) if sets else []


def _user_tags(run: Any) -> set[str]:
    return {k for k, v in run.data.tags.items() if not k.startswith(SYSTEM_TAG_PREFIXES) and v and v.strip()}


def _model_name(client: Any, experiment_id: str, runs: list[Any]) -> str:
    """The name every run logged its model under: ``model`` when every run has one so named,
    else a name every run used, else the most used one (the check then says what is missing)."""
    names: dict[str, set[str]] = {r.info.run_id: set() for r in runs}
    token = None
    while True:
        page = client.search_logged_models(experiment_ids=[experiment_id], max_results=100, page_token=token)
        for model in page:
            if model.source_run_id in names:
                names[model.source_run_id].add(model.name)
        token = getattr(page, "token", None)
        if not token:
            break
    common = _on_every_run(names.values())
    if "model" in common or not any(names.values()):
        return "model"
    if common:
        return common[0]
    counts = Counter(n for found in names.values() for n in found)
    return counts.most_common(1)[0][0]


def learn(client: Any, experiment: Any, runs: list[Any], project: str) -> Draft:
    """The draft policy for ``runs`` (finished ones), its levels decided by the conventions."""
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if not finished:
        raise ConfigError(
            f"None of the {len(runs)} runs of experiment {experiment.name!r} finished; policy init learns "
            "from finished runs."
        )
    why: dict[str, str] = {}
    experiment_template = learn_experiment_template(experiment.name, project)
    if experiment_template is None:
        experiment_template = Naming().experiment
        why["naming"] = f"the experiment's name {experiment.name!r} has braces, which templates use"
    learned = learn_run_template([r.info.run_name or "" for r in finished], project)
    if isinstance(learned, str):
        run_template, placeholders = Naming().run, {}
        why.setdefault("naming", learned)
    else:
        run_template, placeholders = learned
    tags = _on_every_run(_user_tags(r) for r in finished)
    draft = Draft(
        experiment=experiment.name,
        project=project,
        runs=len(finished),
        left_out=len(runs) - len(finished),
        experiment_template=experiment_template,
        run_template=run_template,
        placeholders=placeholders,
        tags=tags or None,
        params=_on_every_run(set(r.data.params) for r in finished),
        metrics=_on_every_run(set(r.data.metrics) for r in finished),
        model_artifact_path=_model_name(client, experiment.experiment_id, finished),
    )
    if not tags:
        why["tags"] = "no tag is on every run, so mlflow-ci's default list stays"
    failing = _failing_families(client, finished, draft)
    draft.levels = {family: "warn" if family in failing else "enforce" for family in FAMILIES}
    for family, (count, first) in failing.items():
        runs_failing = f"{count} of {len(finished)} runs fail it"
        reason = why.get(family)
        draft.why[family] = (
            f"{reason} ({runs_failing})"
            if reason
            else f"{runs_failing}, e.g. {first.name}: expected {first.expected}, found {first.found}"
        )
    return draft


def _failing_families(client: Any, runs: list[Any], draft: Draft) -> dict[str, tuple[int, Check]]:
    """Per family, how many runs fail its conventions (all enforced) and the first failing check."""
    policy = Policy.model_validate(draft.policy_data(levels={}))
    runs_failing: Counter[str] = Counter()
    first: dict[str, Check] = {}
    for run in runs:
        failed_here: set[str] = set()
        for name, convention in CONVENTIONS:
            family = FAMILY.get(name)
            if family is None:
                continue
            failed = [c for c in convention(client, run, policy) if c.failed]
            if failed:
                failed_here.add(family)
                first.setdefault(family, failed[0])
        runs_failing.update(failed_here)
    return {family: (count, first[family]) for family, count in runs_failing.items()}


# --------------------------------------------------------------------------------------------
# The file


LEVEL_HELP = (
    "# Levels, one per family of conventions (tighten one family at a time):\n"
    "#   enforce  a failing check fails the pull request (mlflow-ci's default)\n"
    "#   warn     the report marks it warn with what it would have failed; never fails\n"
    "#   off      not checked; the report's notes say which families are off\n"
    "# An unquoted off is YAML's false, which mlflow-ci reads as off.\n"
)

FAMILY_HELP = {
    "naming": "experiment and run names (naming:)",
    "tags": "required tags and tag patterns (tags:)",
    "params": "smoke.required_params",
    "metrics": "smoke.required_metrics, and every metric finite",
    "artifacts": "smoke.required_artifacts",
    "dataset": "a dataset input recorded with mlflow.log_input",
    "model": "a model logged with signature and input example; smoke also loads it and predicts",
}


def _q(value: Any) -> str:
    """A YAML scalar or flow list: JSON is valid YAML, and quoting keeps `off`, `yes`, `1.0` strings."""
    return json.dumps(value)


def _comment(text: str) -> str:
    return " ".join(str(text).split())


def render(draft: Draft, *, tracking_uri: str) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    lines = [
        f"# mlflow-ci policy learned by `mlflow-ci policy init --from-runs` on {when} from the",
        f"# {draft.runs} finished runs of experiment {_comment(_q(draft.experiment))} on {_comment(redact(tracking_uri))}.",
        "# What every run already does is enforced; what they do not do yet is at warn, so the first",
        "# pull request passes and its report lists what is still missing. When a family's warnings",
        "# are gone, set it to enforce. Reference: docs/pr-checks.md, schema: docs/mlflow-ci.schema.json.",
        "version: 1",
        f"project: {_q(draft.project)}",
        "",
        LEVEL_HELP.rstrip("\n"),
        "levels:",
    ]
    for family in FAMILIES:
        lines.append(f"  # {FAMILY_HELP[family]}")
        if family in draft.why:
            lines.append(f"  # warn: {_comment(draft.why[family])}")
        lines.append(f"  {family}: {draft.levels[family]}")
    lines += ["", "naming:"]
    lines.append(f"  experiment: {_q(draft.experiment_template)}")
    if "naming" in draft.why:
        lines.append("  # mlflow-ci's default: the runs' names fit no template yet (see levels.naming)")
    else:
        lines.append("  # every run's name fits this template")
    lines.append(f"  run: {_q(draft.run_template)}")
    if draft.placeholders:
        lines.append("  placeholders:")
        lines += [f"    {name}: {_q(pattern)}" for name, pattern in draft.placeholders.items()]
    lines += ["", "tags:"]
    if draft.tags is None:
        lines.append("  # mlflow-ci's default: no tag is on every run yet (see levels.tags)")
        lines.append(f"  required: {_q(Tags().required)}")
    else:
        lines.append("  # on every run (mlflow.* and mlflow_ci.* tags left out)")
        lines.append(f"  required: {_q(draft.tags)}")
    lines += [
        "",
        "smoke:",
        "  # Not learned from runs: how `mlflow-ci smoke` runs the project. Set the entry point and",
        "  # the parameters that make it quick (a few rows, one epoch) before the first pull request.",
        "  entry_point: main",
        "  parameters: {}",
        "  # logged by every run",
        f"  required_params: {_q(draft.params)}",
        f"  required_metrics: {_q(draft.metrics)}",
        f"  model_artifact_path: {_q(draft.model_artifact_path)}",
    ]
    return "\n".join(lines) + "\n"


def write_new(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` only if nothing is there, after loading it with the real loader."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            load_policy(tmp, env={})
        except PolicyError as exc:  # what we wrote is ours: a refusal here is a bug
            raise RuntimeError(f"policy init wrote a policy the loader refuses: {exc}") from None
        try:
            os.link(tmp, path)  # fails when the path exists: never overwrites
        except FileExistsError:
            raise _exists(path) from None
        except OSError:  # a file system without hard links: create it exclusively instead
            try:
                with path.open("x", encoding="utf-8") as fh:
                    fh.write(text)
            except FileExistsError:
                raise _exists(path) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _exists(path: Path) -> ConfigError:
    return ConfigError(
        f"{path} already exists; policy init never overwrites it: move it away or pass -o with a new path."
    )


# --------------------------------------------------------------------------------------------
# `mlflow-ci policy init --from-runs EXPERIMENT`


def _experiment(client: Any, target: str) -> Any:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(target)
    if experiment is None and target.isdigit():
        with contextlib.suppress(MlflowException):
            experiment = client.get_experiment(target)
    if experiment is None:
        raise ConfigError(f"No experiment named {target!r} (nor with that id) on this tracking server.")
    return experiment


def init_from_runs_command(
    *, experiment: str, tracking_uri: str | None, out: Path | None, project: str | None, max_runs: int
) -> int:
    out = Path(out or POLICY_FILENAME)
    if out.exists() or out.is_symlink():
        raise _exists(out)
    if project is not None and not re.match(NAME_RE, project):
        raise ConfigError(
            f"--project {project!r} is not a project name: letters, digits, '_', '.' and '-', "
            "starting with a letter or digit."
        )
    if max_runs < 1:
        raise ConfigError(f"--max-runs must be at least 1, got {max_runs}.")
    if not tracking_uri:
        raise ConfigError("No tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI.")
    tracking.require_reachable(tracking_uri)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with tracking.client_settings(tracking_uri):
        client = MlflowClient(tracking_uri)
        try:
            exp = _experiment(client, experiment)
            runs = list(
                client.search_runs(
                    [exp.experiment_id], max_results=max_runs, order_by=["attributes.start_time DESC"]
                )
            )
            if not runs:
                raise ConfigError(
                    f"Experiment {exp.name!r} has no runs to learn from; log one first, or write the policy by hand."
                )
            draft = learn(client, exp, runs, project or project_from(exp.name))
        except MlflowException as exc:
            raise InfraError(
                f"The tracking server at {tracking_uri} refused a request: {exc.message}"
            ) from None
    write_new(out, render(draft, tracking_uri=tracking_uri))
    _summary(out, draft)
    return 0


def _summary(out: Path, draft: Draft) -> None:
    enforced = [f for f in FAMILIES if draft.levels[f] == "enforce"]
    warned = [f for f in FAMILIES if draft.levels[f] == "warn"]
    left_out = f" ({draft.left_out} unfinished runs left out)" if draft.left_out else ""
    output.info(
        f"wrote {out}: policy for project {draft.project!r} learned from {draft.runs} runs of "
        f"experiment {draft.experiment!r}{left_out}."
    )
    output.info(
        f"  tags {', '.join(draft.tags) if draft.tags else '(none on every run)'}; "
        f"params {', '.join(draft.params) or '(none)'}; metrics {', '.join(draft.metrics) or '(none)'}; "
        f"run names {draft.run_template!r}."
    )
    output.info(f"  enforce: {', '.join(enforced) or '(none)'}")
    for family in warned:
        output.info(f"  warn: {family}: {_comment(draft.why.get(family, ''))}")
    output.info(f"Check it: mlflow-ci conventions {_q(draft.experiment)} --policy {out}")
