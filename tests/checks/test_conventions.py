"""The conventions table (`verify_run`) as our own logic: a fake client and run, no server.

The check names, their order and their expected/found texts are what the smoke and conventions
reports show, so they are pinned here in full. The real runs are in test_smoke.py.
"""

from __future__ import annotations

from types import SimpleNamespace as NS

from mlflow_ci.checks.conventions import CONVENTIONS, verify_run
from mlflow_ci.config import Policy

POLICY = Policy.model_validate(
    {
        "project": "demo",
        "tags": {"required": ["dataset", "owner", "blank"], "patterns": {"env": "^(dev|ci)$", "team": "x"}},
        "smoke": {
            "required_params": ["seed", "nope"],
            "required_metrics": ["accuracy", "loss", "absent"],
            "required_artifacts": ["reports/metrics.json", "top.txt"],
            "require_dataset": True,
        },
    }
)


class FakeClient:
    def get_experiment(self, experiment_id: str) -> NS:
        assert experiment_id == "7"
        return NS(name="exp_demo_20240101")

    def get_metric_history(self, run_id: str, name: str) -> list[NS]:
        return {"accuracy": [NS(value=0.8), NS(value=0.9)], "loss": [NS(value=float("nan")), NS(value=0.5)]}[
            name
        ]

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[NS]:
        return {None: [NS(path="top.txt"), NS(path="reports")], "reports": [NS(path="reports/other.json")]}[
            path
        ]


def make_run(**tags: str) -> NS:
    return NS(
        info=NS(status="FINISHED", experiment_id="7", run_id="r" * 32, run_name="quick-try"),
        data=NS(
            tags=tags,
            params={"seed": "1", "lr": "0.1"},
            metrics={"accuracy": 0.9, "loss": 0.5, "other": float("inf"), "fine": 1.0},
        ),
        inputs=NS(dataset_inputs=[NS(dataset=NS(name="iris", digest="abc123"))]),
    )


def test_verify_run_checks_in_report_order_with_their_texts() -> None:
    run = make_run(dataset="iris", blank="  ", env="prod")
    got = [
        (c.name, c.expected, c.found, c.verdict)
        for c in verify_run(FakeClient(), run, POLICY, check_model=False)
    ]
    assert got == [
        ("run status", "FINISHED", "FINISHED", "pass"),
        ("experiment name", "matches exp_{project}_{date}", "exp_demo_20240101", "pass"),
        ("run name", "matches run_{objective}_{seed}", "quick-try", "fail"),
        ("tag dataset", "present, non-empty", "'iris'", "pass"),
        ("tag owner", "present, non-empty", "missing", "fail"),
        ("tag blank", "present, non-empty", "'  '", "fail"),
        ("tag env value", "matches ^(dev|ci)$", "'prod'", "fail"),
        ("tag team value", "matches x", "missing", "fail"),
        ("required params", "seed, nope", "missing: nope", "fail"),
        ("metric accuracy", "logged, finite", "0.9", "pass"),
        ("metric loss", "logged, finite", "0.5 (non-finite in history: [nan])", "fail"),
        ("metric absent", "logged, finite", "missing", "fail"),
        ("all metrics finite", "no NaN or infinity", "other=inf", "fail"),
        ("artifact reports/metrics.json", "present", "missing", "fail"),
        ("artifact top.txt", "present", "present", "pass"),
        ("dataset input", "recorded with mlflow.log_input", "iris (abc123)", "pass"),
    ]
    naming = verify_run(FakeClient(), run, POLICY, check_model=False)[1:3]
    assert naming[0].detail == r"pattern: `^exp_(?:demo)_(?:\d{4}-?\d{2}-?\d{2})$`"
    assert naming[1].detail == r"pattern: `^run_(?:[a-z][a-z0-9-]*)_(?:\d+)$`"


def test_conventions_the_policy_does_not_ask_for_add_no_checks() -> None:
    lenient = Policy.model_validate(
        {"project": "demo", "tags": {"required": []}, "smoke": {"require_dataset": False}}
    )
    run = make_run()
    run.info.status, run.info.run_name, run.data.metrics = "FAILED", "", {"fine": 1.0}
    names = [(c.name, c.found, c.verdict) for c in verify_run(FakeClient(), run, lenient, check_model=False)]
    assert names == [
        ("run status", "FAILED", "fail"),
        ("experiment name", "exp_demo_20240101", "pass"),
        ("run name", "(none)", "fail"),
        ("required params", "2 params", "pass"),
    ]


def test_the_model_convention_runs_last() -> None:
    assert [name for name, _ in CONVENTIONS][-1] == "model"
