"""Unit tests of the serving logic: answer comparison, image names/tags/labels, the bounded load
generator (against a real loopback HTTP server), batch synthesis and the deploy policy section."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from mlflow_ci.config import Budgets, ImageSettings, ServeCheckSettings, load_policy
from mlflow_ci.core.errors import ConfigError, PolicyError
from mlflow_ci.mlflowio.modelref import LocalModel, ModelRef
from mlflow_ci.serving.images import (
    cache_tag,
    labels,
    normalize,
    registry_auth,
    repository,
    split_ref,
    tag_names,
)
from mlflow_ci.serving.loadtest import LoadResult, is_loopback, run_load
from mlflow_ci.serving.servecheck import (
    _lineage_check,
    batch_payload,
    compare,
    kind_of,
    load_checks,
    missing_column_payload,
)

# --- comparing answers ----------------------------------------------------------------------


def test_compare_exact_and_with_tolerance() -> None:
    same = {"predictions": [0, 2, 1]}
    assert compare(same, {"predictions": [0, 2, 1]}, rtol=0, atol=0) == []
    assert compare({"predictions": [0, 1, 1]}, same, rtol=0, atol=0) == ["/predictions[1]: 1 != 2"]
    assert compare({"predictions": [0.5000001]}, {"predictions": [0.5]}, rtol=0, atol=0)
    assert compare({"predictions": [0.5000001]}, {"predictions": [0.5]}, rtol=1e-6, atol=0) == []
    assert compare([math.nan], [math.nan], rtol=0, atol=0) == []
    assert compare([1, 2], [1, 2, 3], rtol=0, atol=0) == [": 2 items, expected 3"]
    assert compare([True], [1], rtol=0, atol=0)  # a bool is not a number here
    assert compare(["1"], [1], rtol=0, atol=0)
    assert compare({"predictions": [1], "x": 1}, {"predictions": [1]}, rtol=0, atol=0) == ["/x: unexpected"]


# --- image names, tags, labels --------------------------------------------------------------


def test_names_normalize_like_the_engine() -> None:
    assert normalize("model:v1") == "docker.io/library/model:v1"
    assert normalize("team/model:v1") == "docker.io/team/model:v1"
    assert normalize("localhost:5000/team/model:v1") == "localhost:5000/team/model:v1"
    assert split_ref("localhost:5000/team/model:v1") == ("localhost:5000/team/model", "v1")
    assert split_ref("localhost:5000/team/model") == ("localhost:5000/team/model", "latest")


def test_repository_and_tags() -> None:
    settings = ImageSettings(repository="ml/{model}")
    assert repository(settings, "Wine Classifier_v2") == "ml/wine-classifier_v2"
    assert repository(settings, "wine", "localhost:5000") == "localhost:5000/ml/wine"
    assert repository(ImageSettings(registry="reg.example:443"), "wine") == "reg.example:443/wine"
    registered = ModelRef("models:/w@champion", "models:/w/3", "w", version="3", git_commit="a" * 40)
    assert tag_names(registered, ["prod"]) == ["v3", "git-aaaaaaaaaaaa", "prod"]
    assert tag_names(ModelRef("models:/m-1", "models:/m-1", "model", model_id="m-1")) == ["m-1"]
    assert tag_names(ModelRef("runs:/r/model", "runs:/r/model", "model", run_id="f" * 32)) == [
        "run-ffffffffffff"
    ]
    with pytest.raises(ConfigError, match="placeholder"):
        repository(ImageSettings(repository="{team}/{model}"), "w")


def test_labels_carry_lineage_without_credentials_or_empty_values() -> None:
    ref = ModelRef("models:/w@champion", "models:/w/3", "w", version="3", model_id="m-9", run_id="r" * 32,
                   git_commit="c" * 40, tracking_uri="https://bob:secret@mlflow.example:8443/")  # fmt: skip
    local = LocalModel(
        Path("."), mlflow_version="3.17.2", python_version="3.11.7", has_signature=True, input_names=()
    )
    found = labels(ref, local, base_image="python:3.11.7-slim", env={})
    assert found["io.mlflow-ci.model.uri"] == "models:/w/3"
    assert found["io.mlflow-ci.model.requested-uri"] == "models:/w@champion"
    assert found["io.mlflow-ci.run-id"] == "r" * 32
    assert found["io.mlflow-ci.mlflow-version"] == "3.17.2"
    assert found["org.opencontainers.image.revision"] == "c" * 40
    assert found["org.opencontainers.image.version"] == "3"
    assert found["io.mlflow-ci.tracking-uri"] == "https://mlflow.example:8443/"
    assert "org.opencontainers.image.source" not in found  # empty values are left out
    assert not any("secret" in v for v in found.values())
    assert (
        cache_tag("python:3.11.7-slim", "3.17.2") == "mlflow-ci-build-cache:python-3.11.7-slim-mlflow3.17.2"
    )


def test_registry_credentials_come_in_pairs() -> None:
    assert registry_auth({}) is None
    assert registry_auth({"MLFLOW_CI_REGISTRY_USER": "u", "MLFLOW_CI_REGISTRY_PASSWORD": "p"}) == {
        "username": "u",
        "password": "p",
    }
    with pytest.raises(ConfigError):
        registry_auth({"MLFLOW_CI_REGISTRY_USER": "u"})


# --- the load generator against a real loopback server --------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ClassVar[dict[str, float]] = {}
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        with self.lock:
            self.state["in_flight"] += 1
            self.state["max_in_flight"] = max(self.state["max_in_flight"], self.state["in_flight"])
            self.state["count"] += 1
            n = self.state["count"]
        time.sleep(self.state["delay"])
        with self.lock:
            self.state["in_flight"] -= 1
        status = 500 if self.state["fail_every"] and n % self.state["fail_every"] == 0 else 200
        body = b'{"predictions": [1]}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def http_server() -> Iterator[tuple[str, dict[str, float]]]:
    state = {"in_flight": 0, "max_in_flight": 0, "count": 0, "delay": 0.0, "fail_every": 0}
    handler = type("Handler", (_Handler,), {"state": state, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/invocations", state
    finally:
        server.shutdown()
        server.server_close()


def test_load_sends_exactly_n_with_at_most_c_in_flight(http_server: tuple[str, dict[str, float]]) -> None:
    url, state = http_server
    state["delay"] = 0.01
    result = run_load(url, b"{}", requests=40, concurrency=3, max_seconds=60)
    assert (result.sent, result.ok, result.errors) == (40, 40, 0)
    assert state["count"] == 40
    assert state["max_in_flight"] <= 3
    assert not result.stopped_by_time
    assert len(result.latencies_ms) == 40
    p50, p95, p99 = (result.percentile(q) for q in (50, 95, 99))
    assert None not in (p50, p95, p99)
    assert min(result.latencies_ms) <= p50 <= p95 <= p99 <= max(result.latencies_ms)  # type: ignore[operator]


def test_load_stops_at_the_time_bound(http_server: tuple[str, dict[str, float]]) -> None:
    url, state = http_server
    state["delay"] = 0.2
    result = run_load(url, b"{}", requests=10_000, concurrency=2, max_seconds=0.5)
    assert result.stopped_by_time
    assert 0 < result.sent < 10_000
    assert state["count"] == result.sent


def test_load_counts_errors(http_server: tuple[str, dict[str, float]]) -> None:
    url, state = http_server
    state["fail_every"] = 4
    result = run_load(url, b"{}", requests=20, concurrency=1, max_seconds=60)
    assert (result.sent, result.errors) == (20, 5)
    assert result.statuses == {"200": 15, "500": 5}
    assert result.first_error == "500"
    assert result.error_rate == 0.25


def test_load_refuses_anything_but_loopback() -> None:
    assert is_loopback("http://127.0.0.1:8080/x")
    assert is_loopback("http://localhost:8080/x")
    assert not is_loopback("http://10.1.2.3:8080/x")
    with pytest.raises(ConfigError, match="loopback"):
        run_load("http://10.1.2.3:8080/invocations", b"{}", requests=1, concurrency=1, max_seconds=1)


# --- payloads --------------------------------------------------------------------------------


def _local(names: tuple[str, ...]) -> LocalModel:
    return LocalModel(
        Path("."), mlflow_version="3.17.2", python_version=None, has_signature=True, input_names=names
    )


EXAMPLE = {
    "dataframe_split": {"columns": ["a", "n", "s"], "data": [[0.5, 1, "x"], [1.5, 4, "y"], [1.0, 2, "x"]]}
}


def test_batch_is_drawn_within_the_example_ranges_and_keeps_types() -> None:
    settings = ServeCheckSettings(batch_rows=50, seed=7)
    payload, rows, source = batch_payload(EXAMPLE, settings, local=_local(("a", "n", "s")), base_dir=None)
    assert rows == 50
    assert "seed 7" in source
    split = payload["dataframe_split"]
    assert split["columns"] == ["a", "n", "s"]
    data = split["data"]
    assert len(data) == 50
    assert all(0.5 <= r[0] <= 1.5 and isinstance(r[0], float) for r in data)
    assert all(1 <= r[1] <= 4 and isinstance(r[1], int) for r in data)
    assert {r[2] for r in data} == {"x", "y"}
    assert len({r[0] for r in data}) > 10  # more than the example's rows
    again, _, _ = batch_payload(EXAMPLE, settings, local=_local(("a", "n", "s")), base_dir=None)
    assert again == payload  # seeded


def test_batch_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("s,a,n,extra\nx,1.0,2,9\ny,2.0,3,9\n", encoding="utf-8")
    settings = ServeCheckSettings(batch_data="rows.csv")
    payload, rows, _ = batch_payload(EXAMPLE, settings, local=_local(("a", "n", "s")), base_dir=tmp_path)
    assert rows == 2
    assert payload["dataframe_split"]["columns"] == ["a", "n", "s"]
    with pytest.raises(ConfigError, match="lacks"):
        batch_payload(EXAMPLE, settings, local=_local(("a", "zzz")), base_dir=tmp_path)


def test_missing_column_payload() -> None:
    payload = missing_column_payload(EXAMPLE, _local(("a", "n", "s")))
    assert payload is not None
    assert payload["dataframe_split"]["columns"] == ["a", "n"]
    assert missing_column_payload(EXAMPLE, _local(("a",))) is None
    assert missing_column_payload({"inputs": [[1, 2]]}, _local(("a", "b"))) is None


# --- the deploy policy section ---------------------------------------------------------------


def test_deploy_policy_rejects_unknown_targets_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "mlflow-ci.yaml"
    path.write_text("project: p\ndeploy:\n  target: kubernetes\n", encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert f"{path}:3" in str(info.value)
    assert "deploy.target" in str(info.value)
    assert "local, docker" in str(info.value)
    path.write_text("project: p\ndeploy:\n  check:\n    load: {request: 5}\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="did you mean 'requests'"):
        load_policy(path)
    loaded = load_policy(None, project_default="p",
                         env={"MLFLOW_CI__DEPLOY__CHECK__BUDGETS__P95_MS": "20"})  # fmt: skip
    assert loaded.policy.deploy.check.budgets.p95_ms == 20
    assert loaded.source_of("deploy.check.budgets.p95_ms") == "env MLFLOW_CI__DEPLOY__CHECK__BUDGETS__P95_MS"
    assert json.loads(json.dumps(loaded.policy.model_dump(mode="json")))["deploy"]["target"] == "local"


# --- budgets ---------------------------------------------------------------------------------


def _result(latencies: list[float], *, sent: int, stopped: bool = False) -> LoadResult:
    ok = len(latencies)
    return LoadResult(requested=100, concurrency=2, max_seconds=10, sent=sent, ok=ok, wall_seconds=2.0,
                      stopped_by_time=stopped, statuses={"200": ok, "400": sent - ok},
                      latencies_ms=latencies, first_error="400" if sent > ok else "")  # fmt: skip


def test_budgets_decide_the_load_checks() -> None:
    settings = ServeCheckSettings(budgets=Budgets(p50_ms=10, p95_ms=50, p99_ms=None, min_throughput_rps=40))
    fast = {c.name: c for c in load_checks(_result([5.0] * 100, sent=100), settings)}
    assert {n: c.verdict for n, c in fast.items()} == {
        "load test ran to the end": "pass", "error rate": "pass", "p50 latency": "pass",
        "p95 latency": "pass", "p99 latency": "pass", "throughput": "pass",
    }  # fmt: skip
    assert fast["throughput"].found == "50.0 req/s"
    slow = {c.name: c for c in load_checks(_result([5.0] * 90 + [80.0] * 10, sent=100), settings)}
    assert slow["p50 latency"].verdict == "pass"
    assert slow["p95 latency"].verdict == "fail"
    assert slow["p95 latency"].found == "80.0 ms"
    failing = {c.name: c for c in load_checks(_result([5.0] * 60, sent=80, stopped=True), settings)}
    assert failing["load test ran to the end"].verdict == "warn"  # advisory: the time bound hit
    assert failing["error rate"].verdict == "fail"
    assert "20 of 80" in failing["error rate"].found
    assert failing["throughput"].verdict == "fail"  # 30 req/s < 40
    none = {c.name: c for c in load_checks(_result([], sent=10), settings)}
    assert none["p50 latency"].found == "no successful request"
    assert none["p99 latency"].verdict == "fail"  # no budget, but no answer either


@pytest.mark.parametrize(
    ("target", "kind"),
    [("http://127.0.0.1:5001", "url"), ("models:/m@champion", "model"), ("runs:/abc/model", "model"),
     ("localhost:5000/team/model:v3", "image"), ("model:v1", "image")],
)  # fmt: skip
def test_what_serve_check_is_pointed_at(target: str, kind: str) -> None:
    assert kind_of(target) == kind


def test_image_lineage_check() -> None:
    ref = ModelRef("models:/w@champion", "models:/w/3", "w", version="3", run_id="a" * 32)
    same = {"io.mlflow-ci.model.uri": "models:/w/3", "io.mlflow-ci.run-id": "a" * 32}
    assert _lineage_check(same, ref).verdict == "pass"
    assert _lineage_check({**same, "io.mlflow-ci.model.uri": "models:/w/2"}, ref).verdict == "fail"
    assert _lineage_check({**same, "io.mlflow-ci.run-id": "b" * 32}, ref).verdict == "fail"
    assert _lineage_check({}, ref).verdict == "warn"  # built outside mlflow-ci: nothing to contradict


def test_the_policys_deploy_target_names_are_the_target_table() -> None:
    """config keeps the names as a literal (so that reading a policy never imports serving)."""
    from mlflow_ci.config import TARGET_NAMES
    from mlflow_ci.serving.targets import TARGETS

    assert sorted(TARGET_NAMES) == sorted(TARGETS)


def test_percentiles_interpolate_between_ranks() -> None:
    from mlflow_ci.serving.loadtest import LoadResult

    result = LoadResult(requested=100, concurrency=1, max_seconds=1, sent=100, ok=100, wall_seconds=1,
                        stopped_by_time=False, statuses={"200": 100}, latencies_ms=[float(v) for v in range(100, 0, -1)])  # fmt: skip
    assert [result.percentile(q) for q in (50, 95, 99)] == pytest.approx([50.5, 95.05, 99.01])
    assert LoadResult(**{**result.__dict__, "latencies_ms": []}).percentile(50) is None
