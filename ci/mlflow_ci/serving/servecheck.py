"""``mlflow-ci serve-check``: does a served model answer exactly like the model that was gated?

Against a running server (a URL), an image (started as a container and removed afterwards) or a
model URI (started with a deploy target and stopped afterwards):

1. ``/ping`` answers within ``deploy.check.startup_timeout``;
2. the model's saved input example and a batch go to ``/invocations``, and the answers must equal
   the same model's predictions made here through MLflow's own pyfunc backend (the scoring
   server's parsing and JSON encoding, in this process or in the model's env), number for number
   unless ``rtol``/``atol`` allow otherwise;
3. malformed JSON, and a payload missing a column of the signature, get HTTP 400;
4. a bounded load test (:mod:`mlflow_ci.serving.loadtest`) measures p50/p95/p99 latency, throughput and
   error rate against ``deploy.check.budgets``.

The verdict is recorded on a registered version (tag ``mlflow_ci.serve_check.verdict``), where
``promote`` finds it when ``registry.promotion.<alias>.require_serve_check`` is set.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_ci.config import LoadedPolicy, ServeCheckSettings
from mlflow_ci.core import http, output
from mlflow_ci.core.errors import ConfigError
from mlflow_ci.core.output import finish
from mlflow_ci.core.poll import poll
from mlflow_ci.core.report import Check, Report, check
from mlflow_ci.mlflowio.modelref import LocalModel, ModelRef, fetch, is_model_uri, resolve
from mlflow_ci.mlflowio.tags import AT_TAG, FAILURES_TAG, SUBJECT_TAG, VERDICT_TAG
from mlflow_ci.serving.loadtest import LoadResult, is_loopback, run_load

JSON = "application/json"


# --------------------------------------------------------------------------------------------
# HTTP


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer at all
    text: str
    seconds: float

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return None


def post(url: str, body: bytes, *, timeout: float, content_type: str = JSON) -> Answer:
    t0 = time.perf_counter()
    try:
        answer = http.request("POST", url, data=body, headers={"Content-Type": content_type}, timeout=timeout)
    except http.HttpError as err:
        return Answer(None, f"{err.error}: {err.reason}", time.perf_counter() - t0)
    return Answer(answer.status, answer.text, time.perf_counter() - t0)


def get(url: str, *, timeout: float = 3.0) -> Answer:
    t0 = time.perf_counter()
    try:
        answer = http.request("GET", url, timeout=timeout)
    except http.HttpError as err:
        return Answer(None, f"{err.error}: {err.reason}", time.perf_counter() - t0)
    return Answer(answer.status, answer.text if answer.ok else "", time.perf_counter() - t0)


def wait_ready(
    url: str, *, timeout: float, alive: Callable[[], bool] | None = None
) -> tuple[bool, float, str]:
    """Poll ``/ping`` until 200; stop early when ``alive()`` says the server has exited."""

    def exited(_: Answer) -> str | None:
        return "the server exited" if alive is not None and not alive() else None

    polled = poll(lambda: get(f"{url.rstrip('/')}/ping", timeout=2.0), timeout=timeout, interval=0.25,
                  ready=lambda answer: answer.status == 200, give_up=exited)  # fmt: skip
    if polled.ready:
        return True, polled.seconds, "200"
    answer = polled.value
    last = "no answer" if answer is None else f"HTTP {answer.status}" if answer.status else answer.text
    if polled.stopped:
        return False, polled.seconds, f"{polled.stopped} ({last})"
    return False, polled.seconds, f"no 200 within {timeout:g} s ({last})"


# --------------------------------------------------------------------------------------------
# Payloads and the reference answers


def example_payload(local: LocalModel) -> dict[str, Any]:
    if local.serving_example is None:
        raise ConfigError(
            f"The model in {local.path} has no serving input example, so nothing proves what it answers.",
            hint="Log the model with input_example=... (mlflow-ci smoke requires one by default).",
        )
    return dict(json.loads(local.serving_example.read_text(encoding="utf-8")))


def batch_payload(
    example: dict[str, Any], settings: ServeCheckSettings, *, local: LocalModel, base_dir: Path | None
) -> tuple[dict[str, Any], int, str]:
    """A batch of ``batch_rows``: from ``batch_data`` if set, else rows drawn within the input
    example's value ranges (numbers uniformly between the example's min and max, other values
    cycled), so the batch exercises more than the example's exact rows."""
    import numpy as np
    import pandas as pd

    if settings.batch_data:
        path = Path(settings.batch_data)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise ConfigError(f"deploy.check.batch_data: {path} does not exist.")
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        if local.input_names:
            missing = [c for c in local.input_names if c not in frame.columns]
            if missing:
                raise ConfigError(f"{path} lacks the model's input columns {missing}.")
            frame = frame[list(local.input_names)]
        frame = frame.head(settings.batch_rows)
        return _split(frame), len(frame), f"{len(frame)} rows of {path.name}"
    frame = _example_frame(example)
    rows = settings.batch_rows
    if frame is None:
        key = next(k for k in ("inputs", "instances") if isinstance(example.get(k), list))
        items = example[key]
        tiled = [items[i % len(items)] for i in range(rows)]
        return {key: tiled}, rows, f"{rows} rows cycled from the input example"
    rng = np.random.default_rng(settings.seed)
    out = {}
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            out[column] = [values.iloc[i % len(values)] for i in range(rows)]
        elif pd.api.types.is_integer_dtype(values):
            out[column] = rng.integers(int(values.min()), int(values.max()) + 1, size=rows)
        else:
            out[column] = rng.uniform(float(values.min()), float(values.max()), size=rows)
    batch = pd.DataFrame(out, columns=frame.columns).astype(frame.dtypes.to_dict())
    return _split(batch), rows, f"{rows} rows drawn within the input example's ranges (seed {settings.seed})"


def _example_frame(example: dict[str, Any]) -> Any:
    import pandas as pd

    if "dataframe_split" in example:
        split = example["dataframe_split"]
        return pd.DataFrame(split.get("data", []), columns=split.get("columns"))
    if "dataframe_records" in example:
        return pd.DataFrame(example["dataframe_records"])
    return None


def _split(frame: Any) -> dict[str, Any]:
    return {"dataframe_split": json.loads(frame.to_json(orient="split", index=False, date_format="iso"))}


def missing_column_payload(example: dict[str, Any], local: LocalModel) -> dict[str, Any] | None:
    """The input example without the signature's last column, or None when that proves nothing."""
    if len(local.input_names) < 2:
        return None
    drop = local.input_names[-1]
    frame = _example_frame(example)
    if frame is None or drop not in frame.columns:
        return None
    return _split(frame.drop(columns=[drop]))


def reference_answer(
    local: LocalModel, payload: dict[str, Any], env_manager: str, scratch: Path
) -> tuple[Any, str]:
    """What the model answers to ``payload`` through MLflow's pyfunc backend: the scoring server's
    own parsing, predict and JSON encoding, here (``local``) or in the model's cached env."""
    from mlflow.models.flavor_backend_registry import get_flavor_backend

    scratch.mkdir(parents=True, exist_ok=True)
    source = Path(tempfile.mkstemp(prefix="payload-", suffix=".json", dir=scratch)[1])
    target = source.with_suffix(".out.json")
    source.write_text(json.dumps(payload), encoding="utf-8")
    try:
        with output.stdout_to_stderr():
            backend = get_flavor_backend(
                str(local.path), env_manager=env_manager, create_env_root_dir=False, env_root_dir=None
            )
            backend.predict(
                model_uri=str(local.path),
                input_path=str(source),
                output_path=str(target),
                content_type="json",
            )
        return json.loads(target.read_text(encoding="utf-8")), ""
    except Exception as exc:  # the model's own code failing is a finding, not our crash
        text = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


# --------------------------------------------------------------------------------------------
# Comparing answers


def compare(served: Any, expected: Any, *, rtol: float, atol: float, path: str = "") -> list[str]:
    """Differences between two JSON values (numbers within rtol/atol; NaN equals NaN)."""
    if isinstance(expected, dict) and isinstance(served, dict):
        diffs = [f"{path}/{k}: missing" for k in expected if k not in served]
        diffs += [f"{path}/{k}: unexpected" for k in served if k not in expected]
        for k in expected:
            if k in served:
                diffs += compare(served[k], expected[k], rtol=rtol, atol=atol, path=f"{path}/{k}")
        return diffs
    if isinstance(expected, list) and isinstance(served, list):
        if len(expected) != len(served):
            return [f"{path}: {len(served)} items, expected {len(expected)}"]
        diffs = []
        for i, (a, b) in enumerate(zip(served, expected, strict=True)):
            diffs += compare(a, b, rtol=rtol, atol=atol, path=f"{path}[{i}]")
        return diffs
    if _number(expected) and _number(served):
        a, b = float(served), float(expected)
        if (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=rtol, abs_tol=atol):
            return []
        return [f"{path}: {served!r} != {expected!r}"]
    if served != expected or type(served) is not type(expected):
        return [f"{path}: {served!r} != {expected!r}"]
    return []


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def answers_check(
    name: str, served: Answer, expected: Any, reference_error: str, *, rows: int, settings: ServeCheckSettings
) -> Check:
    tolerance = (
        "identical"
        if settings.rtol == 0 and settings.atol == 0
        else f"rtol {settings.rtol:g}, atol {settings.atol:g}"
    )
    want = f"HTTP 200, {rows} answers {tolerance} to in-process"
    if reference_error:
        found = f"the model itself fails in-process: {reference_error}"
        if served.status is not None:
            found += f"; served: HTTP {served.status}"
        return check(name, False, expected=want, found=found, detail=_excerpt(served.text))
    if served.status != 200:
        got = f"HTTP {served.status}" if served.status else served.text
        return check(name, False, expected=want, found=got, detail=_excerpt(served.text))
    diffs = compare(served.json, expected, rtol=settings.rtol, atol=settings.atol)
    if diffs:
        return check(name, False, expected=want, found=f"{len(diffs)} differences, first: {diffs[0][:200]}",
                     detail="; ".join(diffs[:5]))  # fmt: skip
    return check(
        name, True, expected=want, found=f"{rows} answers {tolerance} ({served.seconds * 1000:.0f} ms)"
    )


def _excerpt(text: str) -> str:
    text = text.strip()
    return f"Server answer: `{text[:400]}`" if text else ""


# --------------------------------------------------------------------------------------------
# The checks


def run_checks(
    url: str,
    local: LocalModel,
    settings: ServeCheckSettings,
    *,
    report: Report,
    scratch: Path,
    base_dir: Path | None = None,
    alive: Callable[[], bool] | None = None,
    logs: Callable[[], str] | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    """Add every check to ``report``; return the measurements (also stored in ``report.data``)."""
    url = url.rstrip("/")
    example = example_payload(local)
    batch, rows, batch_source = batch_payload(example, settings, local=local, base_dir=base_dir)
    # References first: the server is still starting meanwhile.
    with output.step(f"reference predictions ({settings.reference_env_manager})"):
        expected_example, example_error = reference_answer(
            local, example, settings.reference_env_manager, scratch
        )
        expected_batch, batch_error = reference_answer(local, batch, settings.reference_env_manager, scratch)
    data: dict[str, Any] = {"url": url, "batch": batch_source}
    with output.step(f"wait for {url}/ping"):
        ready, waited, why = wait_ready(url, timeout=settings.startup_timeout, alive=alive)
    report.add(check(f"{prefix}/ping", ready, expected=f"200 within {settings.startup_timeout:g} s",
                     found=f"200 after {waited:.1f} s" if ready else why))  # fmt: skip
    data["ready_seconds"] = round(waited, 2)
    if not ready:
        if logs is not None:
            report.output_tail = logs()
        return data
    version = get(f"{url}/version")
    if version.status == 200:
        data["server_mlflow_version"] = version.text.strip().strip('"')
    invocations = f"{url}/invocations"
    rows_example = _rows(example)
    with output.step("compare answers with in-process predictions"):
        served = post(invocations, json.dumps(example).encode(), timeout=settings.request_timeout)
        report.add(answers_check(f"{prefix}input example", served, expected_example, example_error,
                                 rows=rows_example, settings=settings))  # fmt: skip
        served_batch = post(invocations, json.dumps(batch).encode(), timeout=settings.request_timeout)
        report.add(answers_check(f"{prefix}batch ({batch_source})", served_batch, expected_batch, batch_error,
                                 rows=rows, settings=settings))  # fmt: skip
    with output.step("malformed requests"):
        bad = post(invocations, b'{"dataframe_split": {"columns": [', timeout=settings.request_timeout)
        report.add(check(f"{prefix}malformed JSON", bad.status == 400, expected="HTTP 400",
                         found=f"HTTP {bad.status}" if bad.status else bad.text))  # fmt: skip
        missing = missing_column_payload(example, local)
        if missing is not None:
            bad = post(invocations, json.dumps(missing).encode(), timeout=settings.request_timeout)
            report.add(check(f"{prefix}missing column {local.input_names[-1]!r}", bad.status == 400,
                             expected="HTTP 400", found=f"HTTP {bad.status}" if bad.status else bad.text))  # fmt: skip
    load = settings.load
    if not is_loopback(url) or not url.startswith("http://"):
        report.add(Check(f"{prefix}load test", f"{load.requests} requests", "not run", "skip",
                         detail=f"{url} is not a plain-HTTP loopback address; the load test runs only there."))  # fmt: skip
        report.notes.append(f"Load test skipped: {url} is not a loopback address.")
        return data
    with output.step(
        f"load test: {load.requests} requests, {load.concurrency} at a time, at most {load.max_seconds:g} s"
    ):
        result = run_load(invocations, json.dumps(example).encode(), requests=load.requests,
                          concurrency=load.concurrency, max_seconds=load.max_seconds,
                          timeout=settings.request_timeout)  # fmt: skip
    data["load"] = result.summary()
    for item in load_checks(result, settings, prefix=prefix):
        report.add(item)
    if logs is not None and report.verdict == "fail":
        report.output_tail = logs()
    return data


def load_checks(result: LoadResult, settings: ServeCheckSettings, *, prefix: str = "") -> list[Check]:
    budgets = settings.budgets
    done = f"{result.sent} of {result.requested} in {result.wall_seconds:.1f} s"
    out = [
        check(f"{prefix}load test ran to the end", not result.stopped_by_time, advisory=True,
              expected=f"{result.requested} requests within {result.max_seconds:g} s", found=done,
              detail="Stopped at max_seconds: the percentiles cover fewer requests." if result.stopped_by_time else "")
    ]  # fmt: skip
    out.append(
        check(f"{prefix}error rate", result.error_rate <= budgets.max_error_rate,
              expected=f"≤ {budgets.max_error_rate:.2%}",
              found=f"{result.error_rate:.2%} ({result.errors} of {result.sent}"
              + (f"; first: {result.first_error}" if result.first_error else "") + ")")
    )  # fmt: skip
    for q in (50, 95, 99):
        budget = getattr(budgets, f"p{q}_ms")
        value = result.percentile(q)
        found = f"{value:.1f} ms" if value is not None else "no successful request"
        if budget is None:
            out.append(
                Check(f"{prefix}p{q} latency", "no budget", found, "pass" if value is not None else "fail")
            )
        else:
            out.append(check(f"{prefix}p{q} latency", value is not None and value <= budget,
                             expected=f"≤ {budget:g} ms", found=found))  # fmt: skip
    rps = result.throughput_rps
    if budgets.min_throughput_rps is None:
        out.append(
            Check(f"{prefix}throughput", "no budget", f"{rps:.1f} req/s", "pass" if rps > 0 else "fail")
        )
    else:
        out.append(check(f"{prefix}throughput", rps >= budgets.min_throughput_rps,
                         expected=f"≥ {budgets.min_throughput_rps:g} req/s", found=f"{rps:.1f} req/s"))  # fmt: skip
    return out


def _rows(payload: dict[str, Any]) -> int:
    if "dataframe_split" in payload:
        return len(payload["dataframe_split"].get("data", []))
    if "dataframe_records" in payload:
        return len(payload["dataframe_records"])
    for key in ("inputs", "instances"):
        if isinstance(payload.get(key), list):
            return len(payload[key])
    return 1


# --------------------------------------------------------------------------------------------
# Recording the verdict


def record_verdict(ref: ModelRef, report: Report, subject: str) -> bool:
    """Tag a registered version with the verdict (what ``promote`` checks). False if not registered."""
    if not ref.registered or not ref.tracking_uri:
        return False
    from mlflow_ci.mlflowio.registry import Connection, mlflow_errors

    conn = Connection(ref.tracking_uri)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with mlflow_errors(conn.server, f"recording the serve-check verdict on {ref.label}"):
        client = conn.client
        client.set_model_version_tag(ref.name, ref.version, VERDICT_TAG, report.verdict)
        client.set_model_version_tag(ref.name, ref.version, SUBJECT_TAG, subject[:4000])
        client.set_model_version_tag(ref.name, ref.version, AT_TAG, stamp)
        client.set_model_version_tag(
            ref.name, ref.version, FAILURES_TAG, ", ".join(c.name for c in report.failures)[:4000]
        )
    return True


# --------------------------------------------------------------------------------------------
# `mlflow-ci serve-check TARGET`


def kind_of(target: str) -> str:
    if target.startswith(("http://", "https://")):
        return "url"
    if is_model_uri(target):
        return "model"
    return "image"


def serve_check_command(
    *,
    target: str,
    model: str | None = None,
    deploy_target: str | None = None,
    policy_path: Path | None = None,
    tracking_uri: str | None = None,
    report_dir: Path | None = None,
    batch_data: Path | None = None,
    requests: int | None = None,
    concurrency: int | None = None,
    record: bool = True,
    as_json: bool = False,
    env: Mapping[str, str] | None = None,
) -> int:
    """0 when every check passed, 1 when one failed; the container or server it started is gone."""
    from mlflow_ci.config import load_command_policy
    from mlflow_ci.serving import targets as deploy_targets

    env = os.environ if env is None else env
    overrides = {
        "deploy.check.batch_data": str(batch_data.resolve()) if batch_data else None,
        "deploy.check.load.requests": requests,
        "deploy.check.load.concurrency": concurrency,
        "deploy.target": deploy_target,
    }
    loaded: LoadedPolicy = load_command_policy(policy_path, overrides=overrides)
    policy = loaded.policy
    settings = policy.deploy.check
    base_dir = loaded.path.parent if loaded.path else Path.cwd()
    kind = kind_of(target)
    image_labels: dict[str, str] = {}
    if kind == "image":
        image_labels = _image_labels(target)
    model_uri = model or (target if kind == "model" else image_labels.get("io.mlflow-ci.model.uri"))
    if not model_uri:
        raise ConfigError(
            f"serve-check {target}: which model should it answer like? Pass --model URI"
            + (" (the image has no io.mlflow-ci.model.uri label)." if kind == "image" else ".")
        )
    ref = resolve(model_uri, tracking_uri=tracking_uri, env=env)
    report = Report(
        kind="serve-check", title=f"{target} answers like {ref.label}", tracking_uri=ref.tracking_uri
    )
    report.run_id = ref.run_id
    with tempfile.TemporaryDirectory(prefix="mlflow-ci-serve-check-") as tmp:
        scratch = Path(tmp)
        local = fetch(ref, scratch / "model")
        if kind == "image":
            report.add(_lineage_check(image_labels, ref))
        started = None
        chosen = None
        try:
            if kind == "url":
                url, subject = target, target
            elif kind == "image":
                chosen = deploy_targets.get("docker")
                assert isinstance(chosen, deploy_targets.DockerContainer)
                with output.step(f"start a container of {target}"):
                    started = chosen.run_image(
                        target, settings=policy.deploy, name=_temp_name(), model=ref.to_dict()
                    )
                url, subject = started.url, f"image {target} ({started.handle.get('image_id', '')[:19]})"
            else:
                chosen = deploy_targets.get(policy.deploy.target)
                chosen.preflight()
                with output.step(f"start {ref.label} ({chosen.name})"):
                    started = chosen.start(ref, local, settings=policy.deploy, workdir=scratch / "serve",
                                           name=_temp_name())  # fmt: skip
                url, subject = started.url, f"{chosen.name}: {started.subject}"
            alive = (lambda: chosen.alive(started)) if started and chosen else None
            logs = (lambda: chosen.logs(started)) if started and chosen else None
            data = run_checks(url, local, settings, report=report, scratch=scratch / "ref", base_dir=base_dir,
                              alive=alive, logs=logs)  # fmt: skip
        finally:
            if started is not None and chosen is not None:
                with output.step(f"stop {started.subject}"):
                    chosen.stop(started)
                    if started.handle.get("new_tags"):
                        from mlflow_ci.serving.engine import engine_client
                        from mlflow_ci.serving.images import remove_tags

                        remove_tags(engine_client(), started.handle["new_tags"])
    report.data.update({"target": target, "kind": kind, "subject": subject, "model": ref.to_dict(), **data})
    if image_labels:
        report.data["image_labels"] = image_labels
    if record and record_verdict(ref, report, subject):
        report.notes.append(f"Verdict recorded on {ref.label} ({VERDICT_TAG}={report.verdict}).")
    return finish(report, report_dir=report_dir or Path("reports/mlflow-ci"), as_json=as_json)


def _temp_name() -> str:
    import uuid

    return f"mlflow-ci-serve-check-{uuid.uuid4().hex[:10]}"


def _image_labels(image: str) -> dict[str, str]:
    import docker

    from mlflow_ci.serving.engine import engine_client

    client = engine_client()
    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound:
        try:
            with output.step(f"pull {image}"):
                found = client.images.pull(image)
        except docker.errors.APIError as exc:
            raise ConfigError(
                f"Image {image!r} is neither in the engine's storage nor pullable ({exc.explanation or exc})."
            ) from None
    return dict(found.labels or {})


def _lineage_check(labels: Mapping[str, str], ref: ModelRef) -> Check:
    claimed = labels.get("io.mlflow-ci.model.uri")
    run = labels.get("io.mlflow-ci.run-id")
    if not claimed:
        # Built outside mlflow-ci (e.g. `mlflow models build-docker`): nothing to contradict.
        return check("image lineage", False, advisory=True, expected=f"labels name {ref.uri}",
                     found="no io.mlflow-ci.* labels", detail="Build with `mlflow-ci build-image` to label it.")  # fmt: skip
    ok = claimed == ref.uri and (not ref.run_id or run == ref.run_id)
    return check(
        "image lineage",
        ok,
        expected=f"labels name {ref.uri}" + (f" (run {ref.run_id[:12]})" if ref.run_id else ""),
        found=f"{claimed or 'no io.mlflow-ci.model.uri'}" + (f" (run {run[:12]})" if run else ""),
        detail="The image was built from another model than the one it is compared with.",
    )
