"""``mlflow-ci expect``: assertions on what a workflow that ran mlflow-ci says it did, its outputs
(the verdict and the run id) and the registry aliases they name."""

from __future__ import annotations

from collections.abc import Mapping

from mlflow_ci.core import output
from mlflow_ci.core.errors import CheckFailed


def expect_outputs(*, verdict: str, run_id: str, want: str = "pass") -> int:
    """Check the outputs of a workflow that ran mlflow-ci: exit 0 when they say what was wanted.

    A passing verdict must come with the MLflow run it is about: an empty run id means the checks
    never reached a run, which no caller should read as a pass.
    """
    verdict, run_id = verdict.strip(), run_id.strip()
    problems = []
    if verdict != want:
        problems.append(f"the verdict is {verdict or '(empty)'!r}, expected {want!r}")
    if want == "pass" and not run_id:
        problems.append("the run id is empty")
    if problems:
        raise CheckFailed(
            "The workflow outputs are not as expected: " + "; ".join(problems) + ".",
            hint="The called workflow's smoke job log and report artifact say why.",
        )
    output.info(f"workflow outputs as expected: verdict {verdict}, run id {run_id or '(none)'}")
    return 0


def expect_aliases(*, model: str, wanted: Mapping[str, str], tracking_uri: str | None) -> int:
    """Check that ``model``'s aliases point at the versions a workflow's outputs name: exit 0 when
    every ``alias -> version`` of ``wanted`` holds. An empty version (a missing output) never does."""
    from mlflow_ci.mlflowio.registry import aliases_or_empty, connect

    wanted = {alias: version.strip() for alias, version in wanted.items()}
    actual = aliases_or_empty(connect(tracking_uri), model)  # a missing model has no aliases
    problems = []
    for alias, version in wanted.items():
        found = actual.get(alias)
        if not version:
            problems.append(f"the expected version of @{alias} is empty (a missing workflow output?)")
        elif found != version:
            problems.append(f"@{alias} is {f'v{found}' if found else 'not set'}, expected v{version}")
    if problems:
        raise CheckFailed(
            f"Model {model!r} in the registry is not as expected: " + "; ".join(problems) + ".",
            hint=f"`mlflow-ci audit {model}` shows who moved what, and why.",
        )
    shown = ", ".join(f"@{alias} = v{version}" for alias, version in wanted.items())
    output.info(f"registry as expected: model {model!r} {shown}")
    return 0
