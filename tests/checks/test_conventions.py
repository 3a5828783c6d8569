"""The conventions table (`verify_run`) as our own logic: a fake client and run, no server.

The check names, their order and their expected/found texts are what the smoke and conventions
reports show, so they are pinned here in full. The real runs are in test_smoke.py.
"""

from __future__ import annotations

from types import SimpleNamespace as NS

from mlflow_ci.checks.conventions import CONVENTIONS, FAMILY, adoption_notes, leveled, verify_run
from mlflow_ci.config import FAMILIES, Levels, Policy
from mlflow_ci.core.report import Report, check

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


# --- levels: off, warn, enforce ----------------------------------------------------------------


def _with_levels(**levels: str) -> Policy:
    return POLICY.model_copy(update={"levels": Levels(**levels)})


def test_every_convention_but_status_has_a_family() -> None:
    assert {name for name, _ in CONVENTIONS} - set(FAMILY) == {"status"}
    assert set(FAMILY.values()) == set(FAMILIES)


def test_warn_reports_what_would_fail_without_failing() -> None:
    run = make_run(dataset="iris", blank="  ", env="prod")
    enforced = verify_run(FakeClient(), run, POLICY, check_model=False)
    warned = verify_run(FakeClient(), run, _with_levels(naming="warn", tags="warn"), check_model=False)
    # The same checks, in the same order, with the same texts; only the verdicts of the naming
    # and tag checks that failed change, to warn.
    assert [(c.name, c.expected, c.found, c.detail) for c in warned] == [
        (c.name, c.expected, c.found, c.detail) for c in enforced
    ]
    changed = {c.name: (e.verdict, c.verdict) for e, c in zip(enforced, warned, strict=True) if e != c}
    assert changed == {
        "run name": ("fail", "warn"),
        "tag owner": ("fail", "warn"),
        "tag blank": ("fail", "warn"),
        "tag env value": ("fail", "warn"),
        "tag team value": ("fail", "warn"),
    }
    assert next(c for c in warned if c.name == "tag dataset").verdict == "pass"
    assert next(c for c in warned if c.name == "required params").verdict == "fail"


def test_off_does_not_check_the_family() -> None:
    run = make_run(dataset="iris", blank="  ", env="prod")
    all_off = _with_levels(**dict.fromkeys(FAMILIES, "off"))
    # The model family is off too: verify_model_metadata is never called (the fake client has no
    # search_logged_models, so calling it would raise).
    assert [c.name for c in verify_run(FakeClient(), run, all_off)] == ["run status"]
    names = [
        c.name
        for c in verify_run(FakeClient(), run, _with_levels(tags="off", metrics="off"), check_model=False)
    ]
    assert "tag owner" not in names
    assert "tag env value" not in names
    assert not [n for n in names if n.startswith("metric") or n == "all metrics finite"]
    assert {"run name", "required params", "dataset input"} <= set(names)


def test_params_and_metrics_are_separate_families() -> None:
    run = make_run(dataset="iris", blank="  ", env="prod")
    checks = {
        c.name: c.verdict
        for c in verify_run(FakeClient(), run, _with_levels(metrics="warn"), check_model=False)
    }
    assert checks["required params"] == "fail"
    assert checks["metric loss"] == checks["metric absent"] == checks["all metrics finite"] == "warn"
    assert checks["metric accuracy"] == "pass"


def test_leveled_changes_only_failures_and_only_at_warn() -> None:
    items = [check("a", True, expected="x", found="x"), check("b", False, expected="x", found="y")]
    assert leveled(items, "enforce") == items
    assert [c.verdict for c in leveled(items, "warn")] == ["pass", "warn"]


def test_the_report_of_an_enforce_only_policy_is_unchanged_and_warn_is_marked() -> None:
    run = make_run(dataset="iris", blank="  ", env="prod")
    enforced = Report(
        kind="conventions", title="t", checks=verify_run(FakeClient(), run, POLICY, check_model=False)
    )
    adoption_notes(enforced, POLICY)
    assert enforced.notes == []
    assert enforced.data == {}
    assert "warnings" not in enforced.to_dict()
    assert enforced.to_markdown().splitlines()[0] == "### ❌ mlflow-ci conventions: t — **FAIL**"

    policy = _with_levels(
        naming="warn", tags="warn", params="warn", metrics="warn", artifacts="warn", dataset="off"
    )
    warned = Report(
        kind="conventions", title="t", checks=verify_run(FakeClient(), run, policy, check_model=False)
    )
    adoption_notes(warned, policy)
    assert warned.verdict == "pass"
    assert warned.to_dict()["warnings"] == [c.name for c in enforced.failures if c.name != "run status"]
    assert warned.notes == [
        "Level warn (reported, never failing): naming, tags, params, metrics, artifacts. 10 checks would "
        "fail at enforce (marked warn): run name, tag owner, tag blank, tag env value, tag team value, "
        "required params, metric loss, metric absent, all metrics finite, artifact reports/metrics.json.",
        "Not checked (level off): dataset.",
    ]
    markdown = warned.to_markdown()
    assert markdown.splitlines()[0] == "### ✅ mlflow-ci conventions: t — **PASS** (⚠️ 10 warnings)"
    assert "| tag owner | present, non-empty | missing | ⚠️ warn |" in markdown
    assert "<tr class='warn'><td>tag owner</td>" in warned.to_html()
    assert warned.data["levels"]["dataset"] == "off"
