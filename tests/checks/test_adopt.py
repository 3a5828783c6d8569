"""Adopting an existing project: levels (warn, off) on real runs that have MLflow's generated names
and no tags, and `mlflow-ci policy init --from-runs` learning a policy that passes on them.

Runs are logged for real through MLflow to the session's tracking server; the CLI runs as a
subprocess, as in CI.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import EXAMPLE, make_project, run_cli
from mlflow_ci.checks.adopt import learn_run_template
from mlflow_ci.config import Naming, load_policy
from mlflow_ci.mlflowio.tracking import TrackingServer, client_settings, free_port
from mlflow_ci.workflows.comment import comment_body
from modelfactory import iris_split

NAMING_AND_TAG_CHECKS = ("experiment name", "run name", "tag dataset", "tag env", "tag purpose", "tag owner")


def log_legacy_run(
    tracking_uri: str,
    experiment: str,
    *,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    model: bool = True,
    c: float = 1.0,
) -> tuple[str, str]:
    """A run as a project that never heard of mlflow-ci logs it: no run name unless given (so
    MLflow generates one), params, a metric, the training data, a model. Returns (id, name)."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    X_train, X_test, y_train, y_test = iris_split()
    est = LogisticRegression(C=c, max_iter=300).fit(X_train, y_train)
    with client_settings(tracking_uri):
        mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name=name, tags=tags) as run:
            mlflow.log_params({"C": c, "max_iter": 300})
            mlflow.log_metric("accuracy", float(est.score(X_test, y_test)))
            mlflow.log_input(mlflow.data.from_pandas(X_train, name="iris-train"), context="training")
            if model:
                mlflow.sklearn.log_model(
                    est,
                    name="model",
                    signature=infer_signature(X_train, est.predict(X_train)),
                    input_example=X_train.head(3),
                    pip_requirements=["scikit-learn"],
                )
        return run.info.run_id, run.info.run_name


@pytest.fixture(scope="module")
def legacy(tracking_server: TrackingServer) -> tuple[str, list[str]]:
    """An experiment of three finished runs with generated names and no tags; (name, run names)."""
    experiment = f"churn-legacy-{uuid.uuid4().hex[:6]}"
    names = [log_legacy_run(tracking_server.url, experiment, c=c)[1] for c in (0.5, 1.0, 2.0)]
    assert all(re.fullmatch(r"[a-z]+-[a-z]+-\d+", n) for n in names), names
    return experiment, names


def write_policy(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mlflow-ci.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def conventions(target: str, policy: Path, server: TrackingServer, report_dir: Path):
    result = run_cli(
        "conventions", target, "--policy", str(policy), "--tracking-uri", server.url,
        "--json", "--report-dir", str(report_dir),
    )  # fmt: skip
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def test_generated_names_and_no_tags_pass_at_warn_and_the_report_says_what_would_fail(
    legacy, tracking_server: TrackingServer, tmp_path: Path
) -> None:
    experiment, names = legacy
    enforce = write_policy(tmp_path / "enforce", "project: legacy\n")
    failed, enforced = conventions(experiment, enforce, tracking_server, tmp_path / "r1")
    assert failed.returncode == 1, failed.stderr
    expected = {f"{n}: {c}" for n in names for c in NAMING_AND_TAG_CHECKS}
    assert set(enforced["failures"]) == expected
    assert "warnings" not in enforced  # an enforce-only report reads as it always did
    assert enforced["notes"] == []

    warn = write_policy(tmp_path / "warn", "project: legacy\nlevels:\n  naming: warn\n  tags: warn\n")
    report_dir = tmp_path / "r2"
    passed, report = conventions(experiment, warn, tracking_server, report_dir)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert report["verdict"] == "pass"
    assert report["failures"] == []
    # Exactly what enforce failed, now warnings, with the same expected and found.
    assert set(report["warnings"]) == expected
    warned = {c["name"]: c for c in report["checks"] if c["verdict"] == "warn"}
    failing = {c["name"]: c for c in enforced["checks"] if c["verdict"] == "fail"}
    for name in expected:
        assert (warned[name]["expected"], warned[name]["found"]) == (
            failing[name]["expected"],
            failing[name]["found"],
        )
    assert warned[f"{names[0]}: run name"]["found"] == names[0]
    assert report["data"]["runs_warning"] == 3
    assert report["data"]["levels"]["naming"] == report["data"]["levels"]["tags"] == "warn"
    note = next(n for n in report["notes"] if n.startswith("Level warn"))
    assert "naming, tags" in note
    assert f"{len(expected)} checks would fail at enforce" in note
    # The model, dataset, params and metrics families still pass, enforced.
    assert {
        c["verdict"] for c in report["checks"] if c["name"].endswith(("model logged", "dataset input"))
    } == {"pass"}

    markdown = (report_dir / "conventions.md").read_text(encoding="utf-8")
    assert f"— **PASS** (⚠️ {len(expected)} warnings)" in markdown.splitlines()[0]
    assert f"| {names[0]}: run name | matches run_{{objective}}_{{seed}} | {names[0]} | ⚠️ warn |" in markdown
    assert "would fail at enforce" in markdown
    html = (report_dir / "conventions.html").read_text(encoding="utf-8")
    assert f"<tr class='warn'><td>{names[0]}: tag owner</td>" in html
    assert f"PASS (⚠️ {len(expected)} warnings)</h1>" in html
    body = comment_body(report_dir=report_dir, kind="conventions")
    assert body.startswith("<!-- mlflow-ci:conventions -->")
    assert f"| {names[1]}: tag owner | present, non-empty | missing | ⚠️ warn |" in body


def test_off_does_not_check_the_family_and_the_report_says_so(
    legacy, tracking_server: TrackingServer, tmp_path: Path
) -> None:
    experiment, _ = legacy
    # Unquoted: YAML 1.1 reads off as false, which is off.
    policy = write_policy(tmp_path, "project: legacy\nlevels:\n  naming: off\n  tags: off\n")
    assert load_policy(policy, env={}).policy.levels.at("off") == ["naming", "tags"]
    result, report = conventions(experiment, policy, tracking_server, tmp_path / "r")
    assert result.returncode == 0, result.stdout + result.stderr
    names = {c["name"].split(": ", 1)[1] for c in report["checks"]}
    assert not names & set(NAMING_AND_TAG_CHECKS)
    assert {"run status", "dataset input", "model logged", "model signature"} <= names
    assert "warnings" not in report
    assert "Not checked (level off): naming, tags." in report["notes"]
    assert "Not checked (level off): naming, tags." in (tmp_path / "r" / "conventions.md").read_text()


def test_policy_init_learns_a_policy_that_passes_on_the_runs(
    legacy, tracking_server: TrackingServer, tmp_path: Path
) -> None:
    experiment, _ = legacy
    out = tmp_path / "project" / "mlflow-ci.yaml"
    result = run_cli(
        "policy", "init", "--from-runs", experiment, "--tracking-uri", tracking_server.url, "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stderr
    assert "learned from 3 runs" in result.stderr
    text = out.read_text(encoding="utf-8")
    assert "#   warn     the report marks it warn" in text  # the levels are explained in the file
    data = yaml.safe_load(text)
    assert data["project"] == experiment
    assert data["levels"] == {
        "naming": "warn", "tags": "warn", "params": "enforce", "metrics": "enforce",
        "artifacts": "enforce", "dataset": "enforce", "model": "enforce",
    }  # fmt: skip
    assert data["smoke"]["required_params"] == ["C", "max_iter"]
    assert data["smoke"]["required_metrics"] == ["accuracy"]
    assert data["naming"]["experiment"] == "{project}"
    # Names MLflow generated are no convention: the default stays, at warn, and says why.
    assert data["naming"]["run"] == "run_{objective}_{seed}"
    assert re.search(r"# warn: 3 of 3 runs have names MLflow generated \(e\.g\. '[a-z]+-[a-z]+-\d+'\)", text)
    assert data["tags"]["required"] == ["dataset", "env", "purpose", "owner"]

    passed, report = conventions(experiment, out, tracking_server, tmp_path / "r")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert report["failures"] == []
    assert {w.split(": ", 1)[1] for w in report["warnings"]} == {"run name", *NAMING_AND_TAG_CHECKS[2:]}


def test_policy_init_enforces_what_every_run_does(tracking_server: TrackingServer, tmp_path: Path) -> None:
    """Runs named by a convention, with tags: naming and tags are enforced; the one run without a
    model puts the model family at warn."""
    experiment = f"exp_ranker_2026120{uuid.uuid4().int % 10}"
    tags = {"owner": "ml-team", "purpose": "ranking"}
    log_legacy_run(tracking_server.url, experiment, name="train-lr-1", tags={**tags, "extra": "x"})
    log_legacy_run(tracking_server.url, experiment, name="train-lr-17", tags=tags, model=False)
    out = tmp_path / "mlflow-ci.yaml"
    result = run_cli("policy", "init", "--from-runs", experiment, "--tracking-uri", tracking_server.url,
                     "-o", str(out), "--max-runs", "5")  # fmt: skip
    assert result.returncode == 0, result.stderr
    policy = load_policy(out, env={}).policy
    assert policy.project == "ranker"
    assert policy.naming.experiment == "exp_{project}_{date}"
    assert policy.naming.run == "train-lr-{n}"
    assert policy.naming.placeholders == {"n": r"\d+"}
    assert policy.tags.required == ["owner", "purpose"]
    assert policy.levels.at("warn") == ["model"]
    assert "1 of 2 runs fail it, e.g. model logged" in out.read_text()

    passed, report = conventions(experiment, out, tracking_server, tmp_path / "r")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert report["warnings"] == ["train-lr-17: model logged"]


def test_policy_init_never_overwrites(tracking_server: TrackingServer, tmp_path: Path) -> None:
    out = write_policy(tmp_path, "project: mine\n")
    result = run_cli("policy", "init", "--from-runs", "anything", "--tracking-uri", tracking_server.url,
                     "-o", str(out))  # fmt: skip
    assert result.returncode == 2
    assert out.read_text() == "project: mine\n"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "already exists; policy init never overwrites it" in lines[0]
    assert list(tmp_path.iterdir()) == [out]


def test_policy_init_names_a_missing_experiment_and_an_unreachable_server(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    out = tmp_path / "mlflow-ci.yaml"
    missing = run_cli("policy", "init", "--from-runs", "no-such-experiment", "--tracking-uri",
                      tracking_server.url, "-o", str(out))  # fmt: skip
    assert missing.returncode == 2
    assert "No experiment named 'no-such-experiment'" in missing.stderr
    empty = f"empty-{uuid.uuid4().hex[:6]}"
    mlflow.MlflowClient(tracking_server.url).create_experiment(empty)
    no_runs = run_cli("policy", "init", "--from-runs", empty, "--tracking-uri", tracking_server.url,
                      "-o", str(out))  # fmt: skip
    assert no_runs.returncode == 2
    assert f"Experiment {empty!r} has no runs to learn from" in no_runs.stderr
    bad_name = run_cli("policy", "init", "--from-runs", empty, "--tracking-uri", tracking_server.url,
                       "-o", str(out), "--project", "my project")  # fmt: skip
    assert bad_name.returncode == 2
    assert "--project 'my project' is not a project name" in bad_name.stderr
    down = run_cli("policy", "init", "--from-runs", "x", "--tracking-uri", f"http://127.0.0.1:{free_port()}",
                   "-o", str(out))  # fmt: skip
    assert down.returncode == 3
    assert "did not answer /health" in down.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("names", "learned"),
    [
        (["run_classify_1", "run_rank_22"], ("run_{objective}_{seed}", {})),
        (["train-lr-1", "train-lr-17"], ("train-lr-{n}", {"n": r"\d+"})),
        (["train-42"], ("train-{n}", {"n": r"\d+"})),
        (["nightly", "nightly"], ("nightly", {})),
        (["cv_ridge_fold1", "cv_lasso_fold2"], ("cv_{word}_fold{n}", {"word": "[a-z]+", "n": r"\d+"})),
        (["cv_Ridge", "cv_lasso"], ("cv_{Word}", {"Word": "[A-Za-z]+"})),
        (["bold-fox-123", "calm-owl-7"], "2 of 2 runs have names MLflow generated (e.g. 'bold-fox-123')"),
        (["bold-fox-123"], "1 of 1 runs have names MLflow generated (e.g. 'bold-fox-123')"),
        (["alpha-one", "beta-two"], "has no fixed word"),
        (["baseline"], "one run is too few"),
        (["a-1", "a_1_b"], "different shapes"),
        (["x", ""], "some runs have no name"),
    ],
)
def test_learning_a_run_template(names: list[str], learned: object) -> None:
    got = learn_run_template(names, "churn")
    if isinstance(learned, str):
        assert isinstance(got, str)
        assert learned in got
    else:
        assert got == learned
        template, placeholders = got  # type: ignore[misc]
        pattern = Naming(run=template, placeholders=placeholders).pattern("run", "churn")
        assert all(re.match(pattern, n) for n in names)


# --- smoke honours the levels -------------------------------------------------------------------


def test_smoke_with_model_off_skips_the_model_and_passes(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    """A tiny project that logs no model passes smoke with `model: off` (no model checks, no
    prediction), and the report says the family is off."""
    project = make_project(
        tmp_path / "p", "mlflow.log_metric('loss', 0.5)\n", policy="levels: {model: off}\n"
    )
    result = run_cli("smoke", str(project), "--tracking-uri", tracking_server.url, "--json",
                     "--report-dir", str(tmp_path / "out"))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert not [c for c in report["checks"] if c["name"].startswith("model")]
    assert "Not checked (level off): model." in report["notes"]


def test_smoke_of_the_example_at_warn_passes_and_lists_what_would_fail(
    tracking_server: TrackingServer, tmp_path: Path
) -> None:
    """The example project against a stricter naming and tag policy: at warn the smoke passes
    and the report lists the run name and the missing tag; the model still loads and predicts."""
    project = tmp_path / "example_project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("reports", "mlruns"))
    policy = yaml.safe_load((project / "mlflow-ci.yaml").read_text())
    policy["naming"]["run"] = "nightly_{seed}"
    policy["tags"]["required"].append("team")
    policy["levels"] = {"naming": "warn", "tags": "warn"}
    (project / "mlflow-ci.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    result = run_cli("smoke", str(project), "--tracking-uri", tracking_server.url, "--env-manager", "local",
                     "--json", "--report-dir", str(project / "out"))  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["verdict"] == "pass"
    assert report["warnings"] == ["run name", "tag team"]
    verdicts = {c["name"]: c["verdict"] for c in report["checks"]}
    assert (
        verdicts["model loads and predicts"] == verdicts["tag owner"] == verdicts["experiment name"] == "pass"
    )
    markdown = (project / "out" / "smoke.md").read_text()
    assert "| tag team | present, non-empty | missing | ⚠️ warn |" in markdown
    assert "2 checks would fail at enforce (marked warn): run name, tag team." in markdown
