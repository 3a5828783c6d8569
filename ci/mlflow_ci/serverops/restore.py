"""``mlflow-ci restore``: a backup into an *empty* database and artifact store, then verified.

Verification has two halves:

1. against the manifest: schema revision, row counts of every table, every artifact's key and
   size (checksums are checked as each object is copied: objects are named by their SHA-256);
2. through MLflow's server app started on the restored stores (its process imports MLflow while
   the stores are filled: :class:`mlflow_ci.mlflowio.tracking.PreparedServer`), over the REST API: the
   sampled runs (ids, start and end times, status, params, full metric histories), every
   registered model, version (numbers, source runs, creation times) and alias, the sampled runs'
   artifacts listed and some downloaded through the artifact proxy, and the experiment count.

The artifacts are copied (on several threads when an object store is involved:
:mod:`mlflow_ci.core.parallel`), the sampled runs' first, while on another thread the database is
restored and counted, the server started on it and the database read back, then the sampled
runs' artifacts read through the proxy once they are in place.  A damaged dump stops the copy
at the next object; a damaged object fails the restore without the read-back's artifact checks.

Ids, timestamps and version numbers are preserved because the database is restored from a
dump, not re-created through the API (which renumbers versions and assigns new run ids).

The read-back's HTTP client (:mod:`mlflow_ci.serverops.readback`, which imports ``http.client``) is
imported where it is used: the command starts the read-back server's process first, and what
this module imports at the top runs before that.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow_ci.core import output, parallel
from mlflow_ci.core.errors import CheckFailed, ConfigError, InfraError
from mlflow_ci.core.redact import redact
from mlflow_ci.core.report import Check, Report, check
from mlflow_ci.serverops.artifact_stores import ArtifactStore, LocalStore, store_for
from mlflow_ci.serverops.backends import Backend, backend_for
from mlflow_ci.serverops.backup import BackupRepo, object_key, pack_key, sha256_file


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
    server: Any = None,
) -> Report:
    """Restore one backup and return the verification report (``data["plan"]`` always set).

    ``server``: a read-back server from :func:`read_back_server` whose process was started
    earlier (the command starts it first); without one, one is started here."""
    env = dict(os.environ if env is None else env)
    with contextlib.ExitStack() as stack:
        if server is None and server_check and not dry_run:
            server = read_back_server(stack, workdir=workdir, env=env)
        if server is not None:
            server.backend_store_uri, server.artifacts_destination = backend_store_uri, artifacts_uri
        return _restore(source=source, backend_store_uri=backend_store_uri, artifacts_uri=artifacts_uri,
                        auth_db_uri=auth_db_uri, backup_id=backup_id, dry_run=dry_run, server=server, env=env)  # fmt: skip


def read_back_server(stack: contextlib.ExitStack, *, workdir: Path | None = None,
                     env: Mapping[str, str] | None = None) -> Any:  # fmt: skip
    """Start the read-back server's process now, its stores named later (at its ``start``): it
    imports MLflow, seconds of CPU and the longest part of a restore, while the rest goes on.
    Stopped when ``stack`` closes."""
    from mlflow_ci.mlflowio.tracking import PreparedServer

    env = dict(os.environ if env is None else env)
    work = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlflow-ci-restore-")))
    return stack.enter_context(PreparedServer(Path(work) / "server", env=_server_env(env)))


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
    packs_ctx = contextlib.ExitStack()
    with packs_ctx, output.step(f"database ({backend.kind}) and artifacts into {artifacts_uri}"):
        # The database is restored, counted and read back through the server on another thread
        # while the artifacts are copied, the sampled runs' first: the server reads those
        # through its artifact proxy while the rest are written.
        background = parallel.Background(side.run)
        try:
            local = _prepare_target(target)
            packs = _pack_files(repo, manifest, packs_ctx)
            copied = _restore_artifacts(
                repo, sample_first, target, local=local, stop=side.failed, packs=packs
            )
            side.sample_copied.set()
            copied += _restore_artifacts(repo, rest, target, local=local, stop=side.failed, packs=packs)
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
        try:
            artifacts = parallel.Background(self._artifacts_read_back)  # beside the database's reads
            from mlflow_ci.serverops.readback import verify_through_server

            server_checks = verify_through_server(self.server.url, self.manifest, artifacts=False)
            server_checks += [c for c in [artifacts.result()] if c is not None]
        finally:
            self.server.stop()  # read back: not needed while the rest of the copy finishes
        self.seconds["server"] = round(time.monotonic() - t0, 3)
        return db_checks, server_checks

    def _artifacts_read_back(self) -> Check | None:
        """The sampled runs' artifacts through the server's proxy, once they are copied."""
        self.sample_copied.wait()
        if self._abandoned:
            return None
        from mlflow_ci.serverops.readback import verify_artifacts_through_server

        return verify_artifacts_through_server(self.server.url, self.manifest)


def _sample_objects_first(
    manifest: Mapping[str, Any],
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The manifest's objects split into those of the read-back sample's runs and the rest."""
    from mlflow_ci.serverops.readback import artifact_prefix

    prefixes = tuple(
        prefix + "/"
        for run in (manifest["backend"].get("sample") or {}).get("runs", [])
        if (prefix := artifact_prefix(run.get("artifact_uri")))
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


def _pack_files(repo: BackupRepo, manifest: Mapping[str, Any], stack: contextlib.ExitStack) -> dict[str, str]:
    """Every pack the manifest's objects are in → a local file holding it: the file itself on a
    local repository; from an object store each is downloaded once, a few at a time, into a
    folder removed when ``stack`` closes."""
    names = sorted({o["pack"] for o in manifest["artifacts"]["objects"] if "pack" in o})
    root = repo.local_root
    if root is not None:
        for name in names:
            if not (root / pack_key(name)).is_file():
                raise _missing(f"pack {name}")
        return {name: str(root / pack_key(name)) for name in names}
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlflow-ci-packs-")))

    def fetch(batch: Sequence[str]) -> list[None]:
        for name in batch:
            repo.store.get(pack_key(name), folder / f"{name}.pack")
        return []

    parallel.map_batches(fetch, names, threads=parallel.copy_threads(remote=True), batch=1)
    return {name: str(folder / f"{name}.pack") for name in names}


def _missing(what: str) -> InfraError:
    return InfraError(f"Backup {what} is missing: the backup is damaged.",
                      hint="Restore an older backup (`--backup ID`) into new, empty stores.")  # fmt: skip


def _damaged(obj: Mapping[str, Any], found: str) -> InfraError:
    return InfraError(
        f"Backup object for {obj['key']} is damaged (SHA-256 {found[:12]}..., expected {obj['sha256'][:12]}...).",
        hint="Restore an older backup (`--backup ID`) into new, empty stores.",
    )


def _restore_artifacts(repo: BackupRepo, objects: Sequence[Mapping[str, Any]], target: ArtifactStore, *,
                       local: bool, stop: threading.Event, packs: Mapping[str, str] | None = None) -> int:  # fmt: skip
    """Copy ``objects`` into the target, checking each against its SHA-256 (its name in the
    backup); raises :class:`_Stopped` before the next object once ``stop`` is set.  Packed
    objects are read from ``packs`` (name → local file, :func:`_pack_files`)."""
    repo_root = str(repo.local_root) if repo.local_root is not None else None
    made: set[str] = set()
    packs = packs or {}

    def restore_packed(obj: Mapping[str, Any], fds: dict[str, int]) -> None:
        fd = fds.get(obj["pack"])
        if fd is None:
            try:
                fd = fds[obj["pack"]] = os.open(packs[obj["pack"]], os.O_RDONLY)
            except (KeyError, FileNotFoundError):
                raise _missing(f"pack {obj['pack']}") from None
        data = os.pread(fd, obj["size"], obj["offset"])
        found = hashlib.sha256(data).hexdigest()
        if found != obj["sha256"]:
            raise _damaged(obj, found)
        if local:
            target.write_new_bytes(data, obj["key"], made)
        else:
            target.put_bytes(data, obj["key"])

    def restore_batch(batch: Sequence[Mapping[str, Any]]) -> list[None]:
        fds: dict[str, int] = {}
        try:
            for obj in batch:
                if stop.is_set():
                    raise _Stopped()
                if "pack" in obj:
                    restore_packed(obj, fds)
                    continue
                key = object_key(obj["sha256"])
                if local and repo_root is not None:
                    # Local to local (the common drill): one read per object, copy and hash together.
                    hasher = hashlib.sha256()
                    try:
                        target.write_new(os.path.join(repo_root, key), obj["key"], hasher, made)
                    except FileNotFoundError:
                        raise _missing(f"object {key}") from None
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
                    raise _damaged(obj, found)
        finally:
            for fd in fds.values():
                os.close(fd)
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
    """Every artifact's key and size in the target, against the manifest.

    An object store is listed (a request per 1,000 keys), which also finds objects the manifest
    does not name.  A local folder is checked by name, one ``stat`` per object, not walked (the
    walk opens and reads each of two folders per run: most of the check's time): the restore
    found it empty and writes only the manifest's keys into it, so an object it did not write
    could only come from another writer during the restore."""
    want = {o["key"]: o["size"] for o in manifest["artifacts"]["objects"]}
    have = target.sizes(want) if isinstance(target, LocalStore) else {o.key: o.size for o in target.list()}
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


# --------------------------------------------------------------------------------------------
# The command


def _plan_text(p: Mapping[str, Any]) -> str:
    """What a dry run would restore, in one sentence."""
    return (
        f"would restore backup {p['backup']} ({p['created']}, MLflow {p['mlflow_version']}): "
        f"{p['backend']['rows']} rows in {p['backend']['tables']} tables (schema {p['backend']['schema_revision']}) "
        f"into {p['backend']['into']}, {p['artifacts']['count']} artifacts ({p['artifacts']['bytes']} bytes) "
        f"into {p['artifacts']['into']}" + (", and the auth database" if p["auth"] else "") + "."
    )


def restore_command(*, source: str | None, backend_store_uri: str | None, artifacts_uri: str | None,
                    auth_db_uri: str | None, backup_id: str | None, dry_run: bool, server_check: bool,
                    policy_path: Path | None, report_dir: Path | None, as_json: bool, drill: bool = False) -> int:  # fmt: skip
    with contextlib.ExitStack() as stack:
        # First of all, before even the policy's models are imported: the read-back server's
        # process imports MLflow (the longest part of a restore) while the rest is done.
        server = read_back_server(stack) if server_check and not dry_run else None
        from mlflow_ci.serverops.profile import resolve_ops

        ops = resolve_ops(policy_path, destination=source)
        if not ops.destination:
            raise ConfigError(
                "No backup to restore from.", hint="Pass --from DEST or set backup.destination."
            )
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
                                dry_run=dry_run, server_check=server_check, server=server)  # fmt: skip
        if drill:
            report.title = f"restore drill of backup {report.data['plan']['backup']}"
            report.kind = "restore-drill"
    output.emit_report(report, report_dir=report_dir, as_json=as_json,
                       text=_plan_text(report.data["plan"]) if dry_run else None)  # fmt: skip
    if report.verdict == "fail":
        raise CheckFailed(
            f"Restore of backup {report.data['plan']['backup']} did not verify: "
            + "; ".join(f"{c.name}: {c.found}" for c in report.failures)
            + ".",
            hint="The restored stores are left as they are for inspection; drop them before trying again.",
        )
    return 0
