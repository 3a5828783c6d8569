"""A restore's read-back: the backup's sample read through a started MLflow server and compared.

Over MLflow's REST API with plain HTTP, as any client sees the server: the sampled runs (ids,
names, start and end times, status, lifecycle stage, params, every metric point), every
registered model, version (number, source run, source, creation time) and alias, the number of
experiments, and the sampled runs' artifacts listed, and a few downloaded and checksummed,
through the artifact proxy.  No MLflow import on this side: the restore's process stays light
while the server's own process imports MLflow.

A read the server answers with an error fails its check with the server's message (the restored
stores do not read back); a server that stops answering is an infrastructure error.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from mlflow_ci.core import http, parallel
from mlflow_ci.core.errors import ServerUnreachable
from mlflow_ci.core.report import Check, check

TIMEOUT_S = 60
# The server's bulk history endpoint (the one MLflow's UI charts read) returns at most this many
# points per run; longer histories are read with the paged per-run call instead.
BULK_HISTORY_LIMIT = 25000
BULK_HISTORY_RUNS = 100
PAGE = 1000
# Requests of one kind in flight at a time: this process reads one answer while the next is made.
READ_THREADS = 2


class ServerAnswered(Exception):
    """The server answered a request with an error status."""

    def __init__(self, status: int, path: str, message: str) -> None:
        super().__init__(f"HTTP {status} from {path}: {message}")
        self.status = status


class Unreadable(Exception):
    """A request got no usable answer: the connection failed, or the body is not JSON."""


class Rest:
    """MLflow's REST API at ``url`` through :class:`mlflow_ci.core.http.Client`: one keep-alive
    connection per thread, opened again once when the server has closed it (a restore's process
    never imports an HTTP library of its own)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        # The read-back server is this machine's: straight to it, whatever proxy the environment names.
        self._client = http.Client(self.url, timeout=TIMEOUT_S, env_proxies=False)

    def _request(
        self, method: str, path: str, params: Any, body: Any, *, sink: Callable[[bytes], Any] | None = None
    ) -> http.Response:
        """The answer to a request; :class:`ServerAnswered` for an error status, :class:`Unreadable`
        when there is none."""
        try:
            answer = self._client.request(method, path, params=params, json=body, sink=sink)
        except http.HttpError as exc:
            raise Unreadable(f"{method} {path}: {exc.reason}") from exc
        if answer.status != 200:
            raise ServerAnswered(answer.status, path, _error_message(answer.body, answer.reason))
        return answer

    def call(self, method: str, path: str, *, params: Any = None, body: Any = None) -> Any:
        """The JSON answer; :class:`ServerAnswered` for an error status."""
        data = self._request(method, path, params, body).body
        try:
            return json.loads(data)
        except ValueError as exc:
            raise Unreadable(f"{method} {path}: the answer is not JSON ({data[:80]!r})") from exc

    def sha256(self, path: str) -> str:
        """The SHA-256 of the body of ``GET path``, read in blocks."""
        hasher = hashlib.sha256()
        self._request("GET", path, None, None, sink=hasher.update)
        return hasher.hexdigest()

    def pages(self, method: str, path: str, field: str, **query: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paged search (``next_page_token``)."""
        token = None
        while True:
            query_page = {**query, **({"page_token": token} if token else {})}
            if method == "GET":
                answer = self.call("GET", path, params=query_page)
            else:
                answer = self.call(method, path, body=query_page)
            yield from answer.get(field, [])
            token = answer.get("next_page_token")
            if not token:
                return

    def healthy(self) -> bool:
        from mlflow_ci.mlflowio.tracking import check_health

        return check_health(self.url)


def _error_message(body: bytes, reason: str) -> str:
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
        text = str(data.get("message") or data.get("error_code") or data)
    except (ValueError, AttributeError):
        pass
    return (text.strip().splitlines() or [reason or "no message"])[0][:300]


def guarded(rest: Rest, name: str, expected: str, read: Callable[[], Check]) -> Check:
    """``read()``'s check, or a failed one when the server answers the read with an error."""
    try:
        return read()
    except (ServerAnswered, Unreadable) as exc:
        if not rest.healthy():
            raise ServerUnreachable(
                f"The read-back server at {rest.url} stopped answering during the check {name!r}.",
                hint="Its log is in the restore's work folder (server/server.log); the restored stores are in place.",
            ) from None
        return check(name, False, expected=expected, found=f"the server answered an error: {exc}")


def verify_through_server(url: str, manifest: Mapping[str, Any], *, artifacts: bool = True) -> list[Check]:
    """Read the sample back and compare it field by field (``artifacts=False``: everything but
    the artifacts, which need the artifact store filled).  The checks run side by side, a few
    requests in flight at a time (the server's threads answer while this process compares)."""
    rest = Rest(url)
    sample = manifest["backend"].get("sample") or {}
    n_runs, n_models = len(sample.get("runs", [])), len(sample.get("registered_models", []))
    reads: list[tuple[str, str, Callable[[], Check]]] = [
        ("runs read back (ids, times, status, params, metric histories)", f"{n_runs} sampled runs identical",
         lambda: _check_runs(rest, sample)),
        ("registered models, versions, aliases read back",
         f"{n_models} models and their versions and aliases identical", lambda: _check_models(rest, sample)),
        ("experiments read back", str(manifest["backend"]["row_counts"].get("experiments")),
         lambda: _check_experiments(rest, manifest)),
    ]  # fmt: skip
    checks = parallel.map_batches(lambda batch: [guarded(rest, *read) for read in batch], reads,
                                  threads=len(reads), batch=1)  # fmt: skip
    if artifacts:
        checks.append(verify_artifacts_through_server(url, manifest, rest=rest))
    return checks


def verify_artifacts_through_server(
    url: str, manifest: Mapping[str, Any], *, rest: Rest | None = None
) -> Check:
    """The sampled runs' artifacts listed, and some downloaded, through the artifact proxy."""
    rest = rest or Rest(url)
    sample = manifest["backend"].get("sample") or {}
    return guarded(rest, "run artifacts through the artifact proxy", "listing and checksums equal",
                   lambda: _check_artifacts(rest, sample, manifest))  # fmt: skip


# --------------------------------------------------------------------------------------------
# Runs and metric histories


def _check_runs(rest: Rest, sample: Mapping[str, Any]) -> Check:
    """Each run read by id, one bulk history read per metric key and 100 runs."""
    problems: list[str] = []
    metric_points = 0
    wanted = sample.get("runs", [])
    runs = parallel.Background(_runs_by_id, rest, wanted)  # beside the histories
    histories = _metric_histories(rest, wanted)
    got_runs = runs.result()
    for want in wanted:
        run = got_runs.get(want["run_id"])
        if run is None:
            problems.append(f"{want['run_id']}: not found")
            continue
        info = run.get("info", {})
        got = {"experiment_id": info.get("experiment_id"), "name": info.get("run_name"),
               "status": info.get("status"), "start_time": _int_or_none(info.get("start_time")),
               "end_time": _int_or_none(info.get("end_time")), "lifecycle_stage": info.get("lifecycle_stage")}  # fmt: skip
        for key, value in got.items():
            if want[key] != value:
                problems.append(f"{want['run_id']} {key}: {want[key]!r} → {value!r}")
        params = {p["key"]: p.get("value", "") for p in run.get("data", {}).get("params", [])}
        if params != want["params"]:
            problems.append(f"{want['run_id']} params differ")
        for key, points in want["metrics"].items():
            got_points = histories.get((want["run_id"], key), [])
            metric_points += len(got_points)
            if got_points != points:
                problems.append(f"{want['run_id']} metric {key}: {len(points)} points → {len(got_points)}")
    return check("runs read back (ids, times, status, params, metric histories)", not problems,
                 expected=f"{len(wanted)} sampled runs identical",
                 found=f"{len(wanted)} runs, {metric_points} metric points identical" if not problems
                 else "; ".join(problems[:5]))  # fmt: skip


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _runs_by_id(rest: Rest, wanted: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each sampled run read by id (``runs/get``): a read that touches nothing but the run (MLflow's
    run search first imports the server's auth module, half a second of the read-back)."""

    def get(batch: Sequence[Mapping[str, Any]]) -> list[tuple[str, Any]]:
        out = []
        for want in batch:
            try:
                out.append(
                    (
                        want["run_id"],
                        rest.call("GET", "/api/2.0/mlflow/runs/get", params={"run_id": want["run_id"]})[
                            "run"
                        ],
                    )
                )
            except ServerAnswered as exc:
                if exc.status != 404:
                    raise
        return out

    return dict(parallel.map_batches(get, list(wanted), threads=READ_THREADS, batch=1))


def _norm(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, str) and value in ("NaN", "nan"):
        return "nan"
    return value


def sorted_points(points: Any) -> list[list[Any]]:
    """[step, timestamp, value] points in one order, NaN as ``"nan"`` (as the manifest has them)."""
    return sorted(
        ([int(p[0]), int(p[1]), _norm(p[2])] for p in points), key=lambda m: (m[0], m[1], str(m[2]))
    )


def _metric_histories(rest: Rest, wanted: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[Any]]:
    """(run id, key) → sorted [step, timestamp, value] points, for every metric the sample names."""
    by_key: dict[str, list[str]] = {}
    long: list[tuple[str, str]] = []
    for want in wanted:
        for key, points in want["metrics"].items():
            if len(points) >= BULK_HISTORY_LIMIT:
                long.append((want["run_id"], key))
            else:
                by_key.setdefault(key, []).append(want["run_id"])
    bulk = [(key, run_ids[i : i + BULK_HISTORY_RUNS]) for key, run_ids in by_key.items()
            for i in range(0, len(run_ids), BULK_HISTORY_RUNS)]  # fmt: skip

    def read(batch: Sequence[tuple[str, list[str]]]) -> list[tuple[tuple[str, str], Any]]:
        points: list[tuple[tuple[str, str], Any]] = []
        for key, run_ids in batch:
            answer = rest.call("GET", "/ajax-api/2.0/mlflow/metrics/get-history-bulk",
                               params={"run_id": run_ids, "metric_key": key, "max_results": BULK_HISTORY_LIMIT})  # fmt: skip
            points += [
                ((m["run_id"], key), (m.get("step", 0), m["timestamp"], m["value"]))
                for m in answer.get("metrics", [])
            ]
        return points

    out: dict[tuple[str, str], list[Any]] = {}
    for pair, point in parallel.map_batches(read, bulk, threads=READ_THREADS, batch=1):
        out.setdefault(pair, []).append(point)
    return {pair: sorted_points(points) for pair, points in out.items()}


# --------------------------------------------------------------------------------------------
# Registered models and experiments


def _check_models(rest: Rest, sample: Mapping[str, Any]) -> Check:
    """Registered models (creation times), every version (source run, source, creation time), aliases."""
    problems: list[str] = []
    want_versions = {(v["name"], int(v["version"])): v for v in sample.get("model_versions", [])}
    got_versions: dict[tuple[str, int], Any] = {}
    got_aliases: set[tuple[str, str, int]] = set()
    models = sample.get("registered_models", [])

    def read(batch: Sequence[Mapping[str, Any]]) -> list[tuple[Any, list[Any]]]:
        """Each model and its versions (the models a few at a time)."""
        out = []
        for want_model in batch:
            name = want_model["name"]
            rm = rest.call("GET", "/api/2.0/mlflow/registered-models/get", params={"name": name})
            quoted = name.replace("'", "\\'")
            versions = list(rest.pages("GET", "/api/2.0/mlflow/model-versions/search", "model_versions",
                                       filter=f"name = '{quoted}'", max_results=PAGE))  # fmt: skip
            out.append((rm["registered_model"], versions))
        return out

    for want_model, (rm, versions) in zip(
        models, parallel.map_batches(read, models, threads=READ_THREADS, batch=1), strict=True
    ):
        name = want_model["name"]
        if _int_or_none(rm.get("creation_timestamp")) != want_model["creation_time"]:
            problems.append(f"model {name} creation time changed")
        for alias in rm.get("aliases", []):
            got_aliases.add((name, alias["alias"], int(alias["version"])))
        for mv in versions:
            got_versions[(name, int(mv["version"]))] = mv
    for key, want in want_versions.items():
        mv = got_versions.get(key)
        if mv is None:
            problems.append(f"{key[0]} v{key[1]} missing")
            continue
        got = (mv.get("run_id", ""), mv.get("source", ""), _int_or_none(mv.get("creation_timestamp")))
        if got != (want["run_id"], want["source"], want["creation_time"]):
            problems.append(f"{key[0]} v{key[1]} run/source/creation time changed")
    extra_versions = set(got_versions) - set(want_versions)
    if extra_versions:
        problems.append(f"unexpected versions {sorted(extra_versions)[:3]}")
    want_aliases = {(a["name"], a["alias"], a["version"]) for a in sample.get("aliases", [])}
    if got_aliases != want_aliases:
        problems.append(f"aliases {sorted(want_aliases)} → {sorted(got_aliases)}")
    return check("registered models, versions, aliases read back", not problems,
                 expected=f"{len(models)} models, {len(want_versions)} versions, {len(want_aliases)} aliases",
                 found="identical" if not problems else "; ".join(problems[:5]))  # fmt: skip


def _check_experiments(rest: Rest, manifest: Mapping[str, Any]) -> Check:
    want = manifest["backend"]["row_counts"].get("experiments")
    got = sum(1 for _ in rest.pages("POST", "/api/2.0/mlflow/experiments/search", "experiments",
                                    view_type="ALL", max_results=PAGE))  # fmt: skip
    return check("experiments read back", want == got, expected=str(want), found=str(got))


# --------------------------------------------------------------------------------------------
# Artifacts through the proxy


def artifact_prefix(artifact_uri: str | None) -> str | None:
    """A run's folder on the proxied store (``mlflow-artifacts:/1/<run>/artifacts`` → ``1/<run>/artifacts``)."""
    if artifact_uri and artifact_uri.startswith("mlflow-artifacts:"):
        return artifact_uri.split(":", 1)[1].lstrip("/")
    return None


PROXY = "/api/2.0/mlflow-artifacts/artifacts"


def _list_recursive(rest: Rest, root: str, path: str = "") -> dict[str, int]:
    """path under ``root`` → size, for every file, one request per folder."""
    out: dict[str, int] = {}
    listed = rest.call("GET", PROXY, params={"path": f"{root}/{path}" if path else root})
    for f in listed.get("files", []):
        rel = f"{path}/{f['path']}" if path else f["path"]
        if f.get("is_dir"):
            out.update(_list_recursive(rest, root, rel))
        else:
            out[rel] = int(f.get("file_size") or 0)
    return out


def _check_artifacts(rest: Rest, sample: Mapping[str, Any], manifest: Mapping[str, Any]) -> Check:
    """Each sampled run's folder listed through the server's artifact proxy (the run's location
    is in the sample already), and the first file of the first few runs downloaded and checksummed."""
    objects = manifest["artifacts"]["objects"]
    problems: list[str] = []
    checked = downloaded = skipped_foreign = 0
    runs = sample.get("runs", [])

    def list_batch(batch: Sequence[Mapping[str, Any]]) -> list[dict[str, int] | None]:
        return [
            _list_recursive(rest, prefix) if (prefix := artifact_prefix(r.get("artifact_uri"))) else None
            for r in batch
        ]

    # Each listing is a request or a few: several runs at a time.
    listings = parallel.map_batches(list_batch, runs, threads=8, batch=1)
    for run, got in zip(runs, listings, strict=True):
        prefix = artifact_prefix(run.get("artifact_uri"))
        if prefix is None or got is None:
            skipped_foreign += 1
            continue
        want = {o["key"][len(prefix) + 1 :]: o for o in objects if o["key"].startswith(prefix + "/")}
        checked += 1
        if {k: o["size"] for k, o in want.items()} != got:
            problems.append(f"{run['run_id']}: {len(want)} artifacts expected, {len(got)} listed")
            continue
        if want and downloaded < 3:
            path, obj = sorted(want.items())[0]
            if rest.sha256(f"{PROXY}/{prefix}/{path}") != obj["sha256"]:
                problems.append(f"{run['run_id']}/{path}: checksum differs after download")
            downloaded += 1
    found = f"{checked} runs listed, {downloaded} files downloaded, identical"
    if skipped_foreign:
        found += f"; {skipped_foreign} runs not on the proxied store were not checked"
    return check("run artifacts through the artifact proxy", not problems, expected="listing and checksums equal",
                 found=found if not problems else "; ".join(problems[:5]))  # fmt: skip
