"""``mlflow-ci restore``: a backup into an *empty* database and artifact store, then verified.

Verification has two halves:

1. against the manifest: schema revision, row counts of every table, every artifact's key and
   size (checksums are checked as each object is copied: objects are named by their SHA-256);
2. through MLflow's server app started on the restored stores (its process imports MLflow while
   the stores are filled: :class:`mlflow_ci.tracking.PreparedServer`), over the REST API: the
   sampled runs (ids, start and end times, status, params, full metric histories), every
   registered model, version (numbers, source runs, creation times) and alias, the sampled runs'
   artifacts listed and some downloaded through the artifact proxy, and the experiment count.

The artifacts are copied (on several threads when an object store is involved:
:mod:`mlflow_ci.parallel`), the sampled runs' first, while on another thread the database is
restored and counted, the server started on it and the database read back, then the sampled
runs' artifacts read through the proxy once they are in place.  A damaged dump stops the copy
at the next object; a damaged object fails the restore without the read-back's artifact checks.

Ids, timestamps and version numbers are preserved because the database is restored from a
dump, not re-created through the API (which renumbers versions and assigns new run ids).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import output, parallel
from .artifact_stores import ArtifactStore, LocalStore, store_for
from .backends import Backend, backend_for, redact
from .backup import BackupRepo, object_key, sha256_file
from .errors import CheckFailed, ConfigError, InfraError
from .report import Check, Report, check


def _ensure_empty(backend: Backend, store: ArtifactStore, auth: Backend | None) -> None:
    tables = backend.tables()
    if tables:
        raise ConfigError(
            f"Refusing to restore into {redact(backend.uri)}: it already has {len(tables)} tables "
            f"({', '.join(tables[:5])}{', ...' if len(tables) > 5 else ''}).",
            hint="Restore into a new, empty database (a server started on it creates tables: restore first, "
            "then start the server).",
        )
    if auth is not None and auth.tables():
        raise ConfigError(f"Refusing to restore the auth database into {redact(auth.uri)}: it is not empty.")
    first = next(iter(store.list()), None)
    if first is not None:
        raise ConfigError(
            f"Refusing to restore into artifact store {store.uri}: it already holds objects (e.g. {first.key}).",
            hint="Use an empty folder, bucket prefix or container.",
        )


def plan(manifest: Mapping[str, Any], *, backend_store_uri: str, artifacts_uri: str,
         auth_db_uri: str | None) -> dict[str, Any]:  # fmt: skip
    db = manifest["backend"]
    return {
        "backup": manifest["id"],
        "created": manifest["created"],
        "mlflow_version": manifest["mlflow_version"],
        "backend": {
            "from": db["kind"],
            "into": redact(backend_store_uri),
            "schema_revision": db["schema_revision"],
            "tables": len(db["row_counts"]),
            "rows": sum(db["row_counts"].values()),
            "row_counts": db["row_counts"],
        },
        "artifacts": {
            "into": artifacts_uri,
            "count": manifest["artifacts"]["count"],
            "bytes": manifest["artifacts"]["bytes"],
        },
        "auth": (
            {
                "into": redact(auth_db_uri) if auth_db_uri else None,
                "rows": sum(manifest["auth"]["row_counts"].values()),
            }
            if manifest.get("auth")
            else None
        ),
    }


def restore_backup(
    *,
    source: str,
    backend_store_uri: str,
    artifacts_uri: str,
    auth_db_uri: str | None = None,
    backup_id: str | None = None,
    dry_run: bool = False,
    server_check: bool = True,
    env: Mapping[str, str] | None = None,
    workdir: Path | None = None,
) -> Report:
    """Restore one backup and return the verification report (``data["plan"]`` always set)."""
    env = dict(os.environ if env is None else env)
    with contextlib.ExitStack() as stack:
        server = None
        if server_check and not dry_run:
            from .tracking import PreparedServer

            # The read-back server's process imports MLflow (seconds of CPU) while the backup is
            # read, the targets are checked and the stores are filled; any error stops it.
            work = workdir or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="mlflow-ci-restore-"))
            )
            server = stack.enter_context(PreparedServer(Path(work) / "server", backend_store_uri=backend_store_uri,
                                                        artifacts_destination=artifacts_uri, env=_server_env(env)))  # fmt: skip
        return _restore(source=source, backend_store_uri=backend_store_uri, artifacts_uri=artifacts_uri,
                        auth_db_uri=auth_db_uri, backup_id=backup_id, dry_run=dry_run, server=server, env=env)  # fmt: skip


def _restore(*, source: str, backend_store_uri: str, artifacts_uri: str, auth_db_uri: str | None,
             backup_id: str | None, dry_run: bool, server: Any, env: Mapping[str, str]) -> Report:  # fmt: skip
    repo = BackupRepo.open(source, env)
    manifest = repo.manifest(backup_id)
    backend = backend_for(backend_store_uri)
    target = store_for(artifacts_uri, env)
    if manifest.get("auth") and not auth_db_uri:
        output.warning(
            "the backup holds an auth database but no --auth-db-uri was given: it will not be restored"
        )
    auth = backend_for(auth_db_uri) if auth_db_uri and manifest.get("auth") else None
    report = Report(kind="restore", title=f"backup {manifest['id']} into {redact(backend_store_uri)}")
    report.data["plan"] = plan(manifest, backend_store_uri=backend_store_uri, artifacts_uri=artifacts_uri,
                               auth_db_uri=auth_db_uri)  # fmt: skip
    if manifest["backend"]["kind"] != backend.kind:
        raise ConfigError(
            f"Backup {manifest['id']} holds a {manifest['backend']['kind']} dump; it cannot be restored into "
            f"{backend.kind} ({redact(backend_store_uri)}).",
            hint="Restore into the same engine, then migrate with MLflow's own tools if you must change engines.",
        )
    backend.check_tools()
    _ensure_empty(backend, target, auth)
    if dry_run:
        report.notes.append("dry run: nothing was restored")
        report.add(check("restore plan", True, expected="empty target", found="empty; nothing written"))
        return report

    seconds: dict[str, float] = {}
    report.data["seconds"] = seconds
    sample_first, rest = _sample_objects_first(manifest)
    side = _DatabaseSide(repo, manifest, backend, auth, server, seconds)
    t0 = time.monotonic()
    with output.step(f"database ({backend.kind}) and artifacts into {artifacts_uri}"):
        # The database is restored, counted and read back through the server on another thread
        # while the artifacts are copied, the sampled runs' first: the server reads those
        # through its artifact proxy while the rest are written.
        background = parallel.Background(side.run)
        try:
            local = _prepare_target(target)
            copied = _restore_artifacts(repo, sample_first, target, local=local, stop=side.failed)
            side.sample_copied.set()
            copied += _restore_artifacts(repo, rest, target, local=local, stop=side.failed)
            target.flush()
            report.data["artifacts_copied"] = copied
            artifact_check = verify_artifacts(manifest, target)
        except BaseException as error:
            side.abandon()
            if isinstance(error, _Stopped):
                background.result()  # raises the database side's error, which stopped the copy
            background.join()
            raise
        seconds["artifacts_and_manifest_checks"] = round(time.monotonic() - t0, 3)
    t0 = time.monotonic()
    with output.step("database checks and read-back through a tracking server" if server is not None
                     else "database checks"):  # fmt: skip
        db_checks, server_checks = background.result()
    # What the database side and the server add after the copy (both overlap it).
    seconds["server_read_back"] = round(time.monotonic() - t0, 3)
    for item in [*db_checks, artifact_check, *server_checks]:
        report.add(item)
    return report


class _Stopped(Exception):
    """The artifact copy stopped because the database side failed (its error is the one raised)."""


class _DatabaseSide:
    """The database restore and checks, then the read-back through a started server: run on a
    thread beside the artifact copy (:meth:`run`).  ``failed`` is set if it raises, which stops
    the copy; the server's artifact checks wait for ``sample_copied``."""

    def __init__(self, repo: BackupRepo, manifest: Mapping[str, Any], backend: Backend, auth: Backend | None,
                 server: Any, seconds: dict[str, float]) -> None:  # fmt: skip
        self.repo, self.manifest, self.backend, self.auth, self.server = repo, manifest, backend, auth, server
        self.seconds = seconds
        self.failed = threading.Event()
        self.sample_copied = threading.Event()
        self._abandoned = False

    def abandon(self) -> None:
        """The copy failed: do not wait for the sample's artifacts."""
        self._abandoned = True
        self.sample_copied.set()

    def run(self) -> tuple[list[Check], list[Check]]:
        try:
            return self._run()
        except BaseException:
            self.failed.set()
            raise

    def _run(self) -> tuple[list[Check], list[Check]]:
        t0 = time.monotonic()
        _restore_db(self.repo, self.manifest, self.backend, self.manifest["backend"])
        if self.auth is not None:
            _restore_db(self.repo, self.manifest, self.auth, self.manifest["auth"])
        # Row counts and revision are read before any server opens the database.
        db_checks = verify_database(self.manifest, self.backend, self.auth)
        self.seconds["database"] = round(time.monotonic() - t0, 3)
        if self.server is None or self._abandoned:
            return db_checks, []
        t0 = time.monotonic()
        try:
            self.server.start()
        except InfraError as error:
            return db_checks, [check("server starts on the restored stores", False, expected="/health answers",
                                     found="did not start", detail=str(error))]  # fmt: skip
        server_checks = verify_through_server(self.server.url, self.manifest, artifacts=False)
        self.sample_copied.wait()
        if not self._abandoned:
            server_checks.append(verify_artifacts_through_server(self.server.url, self.manifest))
        self.seconds["server"] = round(time.monotonic() - t0, 3)
        return db_checks, server_checks


def _sample_objects_first(
    manifest: Mapping[str, Any],
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The manifest's objects split into those of the read-back sample's runs and the rest."""
    prefixes = tuple(
        prefix + "/"
        for run in (manifest["backend"].get("sample") or {}).get("runs", [])
        if (prefix := _artifact_prefix(run.get("artifact_uri")))
    )
    first: list[Mapping[str, Any]] = []
    rest: list[Mapping[str, Any]] = []
    for obj in manifest["artifacts"]["objects"]:
        (first if prefixes and obj["key"].startswith(prefixes) else rest).append(obj)
    return first, rest


def _server_env(env: Mapping[str, str]) -> dict[str, str]:
    keep = ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
            "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCESS_KEY")  # fmt: skip
    return {k: env[k] for k in keep if env.get(k)}


def _restore_db(
    repo: BackupRepo, manifest: Mapping[str, Any], backend: Backend, info: Mapping[str, Any]
) -> None:
    with repo.materialize(f"backups/{manifest['id']}/{info['dump']}") as dump:
        found = sha256_file(dump)
        if found != info["dump_sha256"]:
            raise InfraError(
                f"The database dump of backup {manifest['id']} is damaged: SHA-256 {found[:12]}..., "
                f"the manifest says {info['dump_sha256'][:12]}....",
                hint="Restore an older backup (`--backup ID`).",
            )
        backend.restore(dump)


def _prepare_target(target: ArtifactStore) -> bool:
    """True for a local folder, which is then written without an fsync per file (one sync at the end)."""
    if isinstance(target, LocalStore):
        target.durable = False
        return True
    return False


def _restore_artifacts(repo: BackupRepo, objects: Sequence[Mapping[str, Any]], target: ArtifactStore, *,
                       local: bool, stop: threading.Event) -> int:  # fmt: skip
    """Copy ``objects`` into the target, checking each against its SHA-256 (its name in the
    backup); raises :class:`_Stopped` before the next object once ``stop`` is set."""
    repo_root = str(repo.local_root) if repo.local_root is not None else None
    made: set[str] = set()

    def restore_batch(batch: Sequence[Mapping[str, Any]]) -> list[None]:
        for obj in batch:
            if stop.is_set():
                raise _Stopped()
            key = object_key(obj["sha256"])
            if local and repo_root is not None:
                # Local to local (the common drill): one read per object, copy and hash together.
                hasher = hashlib.sha256()
                try:
                    target.write_new(os.path.join(repo_root, key), obj["key"], hasher, made)
                except FileNotFoundError:
                    raise InfraError(f"Backup object {key} is missing: the backup is damaged.",
                                     hint="Restore an older backup (`--backup ID`) into new, empty stores.") from None  # fmt: skip
                found = hasher.hexdigest()
            else:
                with repo.materialize(key) as blob:
                    if local:
                        hasher = hashlib.sha256()
                        target.copy_in(blob, obj["key"], hasher)
                        found = hasher.hexdigest()
                    else:
                        found = sha256_file(blob)
                        if found == obj["sha256"]:
                            target.put(blob, obj["key"])
            if found != obj["sha256"]:
                raise InfraError(
                    f"Backup object for {obj['key']} is damaged (SHA-256 {found[:12]}..., expected "
                    f"{obj['sha256'][:12]}...).",
                    hint="Restore an older backup (`--backup ID`) into new, empty stores.",
                )
        return []

    remote = not local or repo_root is None
    parallel.map_batches(restore_batch, objects, threads=parallel.copy_threads(remote=remote))
    return len(objects)


# --------------------------------------------------------------------------------------------
# Verification


def _diff_counts(expected: Mapping[str, int], found: Mapping[str, int]) -> list[str]:
    out = []
    for table in sorted(set(expected) | set(found)):
        if expected.get(table) != found.get(table):
            out.append(f"{table}: {expected.get(table)} → {found.get(table)}")
    return out


def verify_database(
    manifest: Mapping[str, Any], backend: Backend, auth: Backend | None = None
) -> list[Check]:
    """Schema revision and the row count of every table, against the manifest."""
    db = manifest["backend"]
    checks = [
        check("schema revision", backend.schema_revision() == db["schema_revision"],
              expected=str(db["schema_revision"]), found=str(backend.schema_revision())),
    ]  # fmt: skip
    diff = _diff_counts(db["row_counts"], backend.row_counts())
    rows = sum(db["row_counts"].values())
    checks.append(check("row counts", not diff, expected=f"{rows} rows in {len(db['row_counts'])} tables",
                        found="all equal" if not diff else "; ".join(diff[:10])))  # fmt: skip
    if auth is not None and manifest.get("auth"):
        adiff = _diff_counts(manifest["auth"]["row_counts"], auth.row_counts())
        checks.append(check("auth database row counts", not adiff, expected="equal to the manifest",
                            found="all equal" if not adiff else "; ".join(adiff[:10])))  # fmt: skip
    return checks


def verify_artifacts(manifest: Mapping[str, Any], target: ArtifactStore) -> Check:
    """Every artifact's key and size in the target, against the manifest (no more, no fewer)."""
    want = {o["key"]: o["size"] for o in manifest["artifacts"]["objects"]}
    have = {o.key: o.size for o in target.list()}
    missing = sorted(set(want) - set(have))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    extra = sorted(set(have) - set(want))
    found = f"{len(have)} objects, {sum(have.values())} bytes"
    problems = [f"missing {missing[:3]}" if missing else "", f"size differs {wrong[:3]}" if wrong else "",
                f"unexpected {extra[:3]}" if extra else ""]  # fmt: skip
    ok = not (missing or wrong or extra)
    return check("artifacts (key, size; checksums verified while copying)", ok,
                 expected=f"{len(want)} objects, {sum(want.values())} bytes",
                 found=found if ok else "; ".join(p for p in problems if p))  # fmt: skip


def _norm(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _artifact_prefix(artifact_uri: str | None) -> str | None:
    if artifact_uri and artifact_uri.startswith("mlflow-artifacts:"):
        return artifact_uri.split(":", 1)[1].lstrip("/")
    return None


def verify_through_server(url: str, manifest: Mapping[str, Any], *, artifacts: bool = True) -> list[Check]:
    """Read the sample back through the MLflow REST API and compare it field by field
    (``artifacts=False``: everything but the artifacts, which need the artifact store filled).

    A server that answers a read with an error fails that check (the restored stores do not read
    back), with the server's message; a server that stopped answering is an infrastructure error."""
    from mlflow import MlflowClient

    from .tracking import client_settings

    sample = manifest["backend"].get("sample") or {}
    n_runs, n_models = len(sample.get("runs", [])), len(sample.get("registered_models", []))
    with client_settings(url):
        client = MlflowClient(tracking_uri=url)
        # One read after another: measured, reads on threads were slower (the first ones each
        # open the server's stores, and the server's one worker serves them in turn).
        checks = [
            _guarded(url, "runs read back (ids, times, status, params, metric histories)",
                     f"{n_runs} sampled runs identical", lambda: _check_runs(url, client, sample)),
            _guarded(url, "registered models, versions, aliases read back",
                     f"{n_models} models and their versions and aliases identical",
                     lambda: _check_models(client, sample)),
            _guarded(url, "experiments read back", str(manifest["backend"]["row_counts"].get("experiments")),
                     lambda: _check_experiments(client, manifest)),
        ]  # fmt: skip
        if artifacts:
            checks.append(_artifact_check(url, sample, manifest))
    return checks


def _guarded(url: str, name: str, expected: str, read: Any) -> Check:
    """``read()``'s check, or a failed one when the server answers the read with an error."""
    import requests
    from mlflow.exceptions import MlflowException

    from .errors import ServerUnreachable
    from .tracking import check_health

    try:
        return read()  # type: ignore[no-any-return]
    except (MlflowException, requests.RequestException) as exc:
        if not check_health(url):
            raise ServerUnreachable(
                f"The read-back server at {url} stopped answering during the check {name!r}.",
                hint="Its log is in the restore's work folder (server/server.log); the restored stores are in place.",
            ) from None
        message = (str(getattr(exc, "message", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        return check(name, False, expected=expected, found=f"the server answered an error: {message[:300]}")


def _check_runs(url: str, client: Any, sample: Mapping[str, Any]) -> Check:
    """Runs and metric histories: one search for the runs, one bulk read per metric key."""
    run_problems: list[str] = []
    metric_points = 0
    wanted = sample.get("runs", [])
    got_runs = _runs_by_id(client, wanted)
    histories = _metric_histories(url, client, wanted)
    for want in wanted:
        run = got_runs.get(want["run_id"])
        if run is None:
            run_problems.append(f"{want['run_id']}: not found")
            continue
        got = {"experiment_id": run.info.experiment_id, "name": run.info.run_name, "status": run.info.status,
               "start_time": run.info.start_time, "end_time": run.info.end_time,
               "lifecycle_stage": run.info.lifecycle_stage}  # fmt: skip
        for key, value in got.items():
            if want[key] != value:
                run_problems.append(f"{want['run_id']} {key}: {want[key]!r} → {value!r}")
        if dict(run.data.params) != want["params"]:
            run_problems.append(f"{want['run_id']} params differ")
        for key, points in want["metrics"].items():
            got_points = histories.get((want["run_id"], key), [])
            metric_points += len(got_points)
            if got_points != points:
                run_problems.append(
                    f"{want['run_id']} metric {key}: {len(points)} points → {len(got_points)}"
                )
    return check("runs read back (ids, times, status, params, metric histories)", not run_problems,
                 expected=f"{len(wanted)} sampled runs identical",
                 found=f"{len(wanted)} runs, {metric_points} metric points identical" if not run_problems
                 else "; ".join(run_problems[:5]))  # fmt: skip


def _check_models(client: Any, sample: Mapping[str, Any]) -> Check:
    """Registered models (creation times), every version (source run, source, creation time), aliases."""
    model_problems: list[str] = []
    want_versions = {(v["name"], int(v["version"])): v for v in sample.get("model_versions", [])}
    got_versions: dict[tuple[str, int], Any] = {}
    got_aliases: set[tuple[str, str, int]] = set()
    names = [m["name"] for m in sample.get("registered_models", [])]
    for want_model in sample.get("registered_models", []):
        name = want_model["name"]
        rm = client.get_registered_model(name)
        if rm.creation_timestamp != want_model["creation_time"]:
            model_problems.append(f"model {name} creation time changed")
        for alias, version in (rm.aliases or {}).items():
            got_aliases.add((name, alias, int(version)))
        for mv in client.search_model_versions(f"name = '{name}'"):
            got_versions[(name, int(mv.version))] = mv
    for key, want in want_versions.items():
        mv = got_versions.get(key)
        if mv is None:
            model_problems.append(f"{key[0]} v{key[1]} missing")
            continue
        if (mv.run_id, mv.source, mv.creation_timestamp) != (
            want["run_id"],
            want["source"],
            want["creation_time"],
        ):
            model_problems.append(f"{key[0]} v{key[1]} run/source/creation time changed")
    extra_versions = set(got_versions) - set(want_versions)
    if extra_versions:
        model_problems.append(f"unexpected versions {sorted(extra_versions)[:3]}")
    want_aliases = {(a["name"], a["alias"], a["version"]) for a in sample.get("aliases", [])}
    if got_aliases != want_aliases:
        model_problems.append(f"aliases {sorted(want_aliases)} → {sorted(got_aliases)}")
    return check("registered models, versions, aliases read back", not model_problems,
                 expected=f"{len(names)} models, {len(want_versions)} versions, {len(want_aliases)} aliases",
                 found="identical" if not model_problems else "; ".join(model_problems[:5]))  # fmt: skip


def _check_experiments(client: Any, manifest: Mapping[str, Any]) -> Check:
    from mlflow.entities import ViewType

    want_exps = manifest["backend"]["row_counts"].get("experiments")
    got_exps = len(client.search_experiments(view_type=ViewType.ALL, max_results=50000))
    return check("experiments read back", want_exps == got_exps, expected=str(want_exps), found=str(got_exps))


def _artifact_check(url: str, sample: Mapping[str, Any], manifest: Mapping[str, Any]) -> Check:
    return _guarded(url, "run artifacts through the artifact proxy", "listing and checksums equal",
                    lambda: _check_artifacts_via_server(url, sample, manifest))  # fmt: skip


def verify_artifacts_through_server(url: str, manifest: Mapping[str, Any]) -> Check:
    """The sampled runs' artifacts listed, and some downloaded, through the artifact proxy."""
    from .tracking import client_settings

    with client_settings(url):
        return _artifact_check(url, manifest["backend"].get("sample") or {}, manifest)


# The server's bulk history endpoint (the one MLflow's UI charts read) returns at most this many
# points per run; longer histories are read with the paged per-run call instead.
BULK_HISTORY_LIMIT = 25000
BULK_HISTORY_RUNS = 100


def _runs_by_id(client: Any, wanted: list[Mapping[str, Any]]) -> dict[str, Any]:
    from mlflow.entities import ViewType

    out: dict[str, Any] = {}
    ids = [w["run_id"] for w in wanted]
    experiments = sorted({str(w["experiment_id"]) for w in wanted})
    for i in range(0, len(ids), 100):
        chunk = ids[i : i + 100]
        quoted = ", ".join(f"'{run_id}'" for run_id in chunk)
        for run in client.search_runs(experiments, filter_string=f"attributes.run_id IN ({quoted})",
                                      run_view_type=ViewType.ALL, max_results=len(chunk)):  # fmt: skip
            out[run.info.run_id] = run
    return out


def _sorted_points(points: Any) -> list[list[Any]]:
    return sorted(([p[0], p[1], _norm(p[2])] for p in points), key=lambda m: (m[0], m[1], str(m[2])))


def _metric_histories(
    url: str, client: Any, wanted: list[Mapping[str, Any]]
) -> dict[tuple[str, str], list[Any]]:
    """(run id, key) → sorted [step, timestamp, value] points, for every metric the sample names."""
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request

    by_key: dict[str, list[str]] = {}
    long: list[tuple[str, str]] = []
    for want in wanted:
        for key, points in want["metrics"].items():
            if len(points) >= BULK_HISTORY_LIMIT:
                long.append((want["run_id"], key))
            else:
                by_key.setdefault(key, []).append(want["run_id"])
    out: dict[tuple[str, str], list[Any]] = {}
    creds = MlflowHostCreds(url)
    for key, run_ids in by_key.items():
        for i in range(0, len(run_ids), BULK_HISTORY_RUNS):
            response = http_request(creds, "/ajax-api/2.0/mlflow/metrics/get-history-bulk", "GET",
                                    params={"run_id": run_ids[i : i + BULK_HISTORY_RUNS], "metric_key": key,
                                            "max_results": BULK_HISTORY_LIMIT})  # fmt: skip
            response.raise_for_status()
            for m in response.json().get("metrics", []):
                out.setdefault((m["run_id"], key), []).append((m["step"], m["timestamp"], m["value"]))
    for run_id, key in long:
        out[(run_id, key)] = [(m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key)]
    return {pair: _sorted_points(points) for pair, points in out.items()}


def _list_recursive(repo: Any, path: str | None = None) -> dict[str, int]:
    out: dict[str, int] = {}
    for info in repo.list_artifacts(path):
        if info.is_dir:
            out.update(_list_recursive(repo, info.path))
        else:
            out[info.path] = int(info.file_size or 0)
    return out


def _check_artifacts_via_server(url: str, sample: Mapping[str, Any], manifest: Mapping[str, Any]) -> Check:
    """Each sampled run's folder listed through the server's artifact proxy with MLflow's own
    client for it (one request per folder: the run's location is in the sample already), and
    the first file of the first few runs downloaded and checksummed."""
    from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository

    objects = manifest["artifacts"]["objects"]
    problems: list[str] = []
    checked = downloaded = 0
    skipped_foreign = 0
    runs = sample.get("runs", [])
    proxy = url.rstrip("/") + "/api/2.0/mlflow-artifacts/artifacts"

    def repo_for(run: Mapping[str, Any]) -> Any:
        return HttpArtifactRepository(f"{proxy}/{_artifact_prefix(run.get('artifact_uri'))}")

    def list_batch(batch: Sequence[Mapping[str, Any]]) -> list[dict[str, int] | None]:
        return [
            _list_recursive(repo_for(r)) if _artifact_prefix(r.get("artifact_uri")) else None for r in batch
        ]

    # Each listing is a request or a few: several runs at a time.
    listings = parallel.map_batches(list_batch, runs, threads=8, batch=1)
    for run, got in zip(runs, listings, strict=True):
        prefix = _artifact_prefix(run.get("artifact_uri"))
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
            with tempfile.TemporaryDirectory(prefix="mlflow-ci-dl-") as tmp:
                local = repo_for(run).download_artifacts(path, tmp)
                if sha256_file(Path(local)) != obj["sha256"]:
                    problems.append(f"{run['run_id']}/{path}: checksum differs after download")
            downloaded += 1
    found = f"{checked} runs listed, {downloaded} files downloaded, identical"
    if skipped_foreign:
        found += f"; {skipped_foreign} runs not on the proxied store were not checked"
    return check("run artifacts through the artifact proxy", not problems, expected="listing and checksums equal",
                 found=found if not problems else "; ".join(problems[:5]))  # fmt: skip


# --------------------------------------------------------------------------------------------
# The command


def restore_command(*, source: str | None, backend_store_uri: str | None, artifacts_uri: str | None,
                    auth_db_uri: str | None, backup_id: str | None, dry_run: bool, server_check: bool,
                    policy_path: Path | None, report_dir: Path | None, as_json: bool, drill: bool = False) -> int:  # fmt: skip
    from .cli import emit_json
    from .server_profile import resolve_ops

    ops = resolve_ops(policy_path, destination=source)
    if not ops.destination:
        raise ConfigError("No backup to restore from.", hint="Pass --from DEST or set backup.destination.")
    with contextlib.ExitStack() as stack:
        if drill:
            # A drill never falls back to the profile's (production) stores: throwaway targets only.
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlflow-ci-drill-")))
            manifest = BackupRepo.open(ops.destination).manifest(backup_id)
            kind = manifest["backend"]["kind"]
            backend_store_uri = backend_store_uri or None  # an empty flag (workflow input) means "pick one"
            if backend_store_uri is None:
                if kind != "sqlite":
                    raise ConfigError(
                        f"A restore drill of a {kind} backup needs --backend-store-uri naming an EMPTY {kind} "
                        "database (e.g. a service container of the CI job).",
                    )
                backend_store_uri = f"sqlite:///{scratch / 'mlflow.db'}"
            target_backend, target_artifacts = backend_store_uri, artifacts_uri or str(scratch / "artifacts")
            target_auth = auth_db_uri or (
                f"sqlite:///{scratch / 'auth.db'}" if ops.server.auth_db_uri else None
            )
        else:
            resolved = resolve_ops(policy_path, backend_store_uri=backend_store_uri, artifacts_uri=artifacts_uri,
                                   destination=source, auth_db_uri=auth_db_uri)  # fmt: skip
            target_backend, target_artifacts = resolved.backend_store_uri, resolved.artifacts_uri
            target_auth = resolved.server.auth_db_uri
        report = restore_backup(source=ops.destination, backend_store_uri=target_backend,
                                artifacts_uri=target_artifacts, auth_db_uri=target_auth, backup_id=backup_id,
                                dry_run=dry_run, server_check=server_check)  # fmt: skip
        if drill:
            report.title = f"restore drill of backup {report.data['plan']['backup']}"
            report.kind = "restore-drill"
    if report_dir:
        report.write(report_dir)
    output.write_step_summary(report.to_markdown())
    if as_json:
        emit_json(report.to_dict())
    elif dry_run:
        p = report.data["plan"]
        output.info(
            f"would restore backup {p['backup']} ({p['created']}, MLflow {p['mlflow_version']}): "
            f"{p['backend']['rows']} rows in {p['backend']['tables']} tables (schema {p['backend']['schema_revision']}) "
            f"into {p['backend']['into']}, {p['artifacts']['count']} artifacts ({p['artifacts']['bytes']} bytes) "
            f"into {p['artifacts']['into']}" + (", and the auth database" if p["auth"] else "") + "."
        )
    else:
        output.info(report.to_markdown())
    if report.verdict == "fail":
        raise CheckFailed(
            f"Restore of backup {report.data['plan']['backup']} did not verify: "
            + "; ".join(f"{c.name}: {c.found}" for c in report.failures)
            + ".",
            hint="The restored stores are left as they are for inspection; drop them before trying again.",
        )
    return 0
