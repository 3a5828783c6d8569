"""``mlflow-ci backup``: one consistent snapshot of a tracking server's database, artifacts and auth database.

Order matters: the database is snapshotted first, then the artifacts are copied, then the auth
database.  A run that the snapshot knows about logged its artifacts before the snapshot was
taken, so every run in the backup finds its artifacts in it; objects written later are extra,
never missing.

Layout of a backup repository (a local folder or an ``s3://``/``wasbs://`` prefix)::

    objects/ab/ab12...           artifact content, addressed by SHA-256, shared by all backups
    backups/<id>/manifest.json   schema revision, row counts, every artifact's key, size, checksum
    backups/<id>/backend.<ext>   the database dump (auth.<ext> for the auth database)
    latest                       the id of the newest complete backup

Atomicity: on a local folder, objects up to 1 MiB are written straight under their name and
larger ones under a temporary name then renamed, all synced once before the manifest is
published; only objects a published manifest names are trusted by later backups, so one torn
by a crash is written again.  On object stores each put is atomic.  On a local folder a
backup is assembled in ``backups/.partial-<id>``, fsynced and renamed into place, and only
then is ``latest`` replaced (atomically).  On object stores the manifest is written last and
is the commit point.  A backup killed midway therefore leaves the previous one intact and
``latest`` pointing at it; the leftovers are removed by the next run.

Incremental: an artifact whose key, size and change token (mtime, ETag) match the previous
manifest reuses its checksum without being read, and an object whose checksum the repository
already holds is not copied again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, output, parallel
from .artifact_stores import ArtifactStore, LocalStore, _copy_hashing, store_for, store_scheme
from .backends import Backend, backend_for, redact
from .errors import ConfigError, InfraError

FORMAT = 1
MANIFEST = "manifest.json"
LATEST = "latest"
CHUNK = 1 << 20
SMALL = 1 << 20  # objects up to this size are copied in one read


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def object_key(sha: str) -> str:
    return f"objects/{sha[:2]}/{sha}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with open(Path(dirpath) / name, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


# --------------------------------------------------------------------------------------------
# The repository


@dataclass
class BackupRepo:
    """Where backups live: a local folder or an object-store prefix."""

    uri: str
    store: ArtifactStore

    @classmethod
    def open(cls, uri: str, env: Mapping[str, str] | None = None) -> BackupRepo:
        return cls(uri, store_for(uri, env))

    @property
    def local_root(self) -> Path | None:
        return self.store.root if isinstance(self.store, LocalStore) else None

    def latest(self) -> str | None:
        raw = self.store.get_bytes(LATEST)
        if raw:
            backup_id = raw.decode().strip()
            if self.store.get_bytes(f"backups/{backup_id}/{MANIFEST}") is not None:
                return backup_id
        # A missing or dangling pointer: fall back to the newest complete backup.
        ids = self.backup_ids()
        return ids[-1] if ids else None

    def backup_ids(self) -> list[str]:
        ids = set()
        for info in self.store.list("backups/"):
            parts = info.key.split("/")
            if len(parts) == 3 and parts[2] == MANIFEST and not parts[1].startswith("."):
                ids.add(parts[1])
        return sorted(ids)

    def manifest(self, backup_id: str | None = None) -> dict[str, Any]:
        backup_id = backup_id or self.latest()
        if backup_id is None:
            raise ConfigError(f"No complete backup in {self.uri}.", hint="Run `mlflow-ci backup` first.")
        raw = self.store.get_bytes(f"backups/{backup_id}/{MANIFEST}")
        if raw is None:
            raise ConfigError(
                f"Backup {backup_id!r} in {self.uri} has no manifest (incomplete or unknown).",
                hint=f"Complete backups: {', '.join(self.backup_ids()) or '(none)'}.",
            )
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            raise ConfigError(
                f"Backup {backup_id} has manifest format {data.get('format')}; expected {FORMAT}."
            )
        return dict(data)

    def object_shas(self) -> set[str]:
        return {info.key.rsplit("/", 1)[-1] for info in self.store.list("objects/")}

    def trusted_shas(self) -> set[str]:
        """Objects a new backup may reuse without copying.

        On a local folder objects are written without an fsync each and synced once before the
        manifest is published, so only objects that a complete manifest names are known durable;
        anything else (left by a killed backup) is copied again.  Object-store writes are atomic
        and durable, so there every object present counts.
        """
        present = self.object_shas()
        if self.local_root is None:
            return present
        named: set[str] = set()
        for backup_id in self.backup_ids():
            named.update(o["sha256"] for o in self.manifest(backup_id)["artifacts"]["objects"])
        return present & named

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One backup or prune at a time on a local repository (object stores: schedule them apart)."""
        root = self.local_root
        if root is None:
            yield
            return
        root.mkdir(parents=True, exist_ok=True)
        with open(root / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InfraError(
                    f"Another backup is writing to {root} right now (it holds {root / '.lock'})."
                ) from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def materialize(self, key: str) -> Iterator[Path]:
        """A local path holding the object ``key`` (the file itself on a local repository)."""
        root = self.local_root
        if root is not None:
            path = root / key
            if not path.is_file():
                raise InfraError(f"Backup object {key} is missing from {root}: the backup is damaged.")
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="mlflow-ci-obj-") as tmp:
            path = Path(tmp) / "obj"
            self.store.get(key, path)
            yield path


# --------------------------------------------------------------------------------------------
# Taking a backup


@dataclass
class _Copied:
    copied: int = 0
    reused_checksums: int = 0
    skipped_present: int = 0
    vanished: int = 0
    bytes_copied: int = 0


def _copy_artifacts(source: ArtifactStore, repo: BackupRepo, previous: Mapping[str, Any] | None,
                    stats: _Copied) -> list[dict[str, Any]]:  # fmt: skip
    """Every object of ``source`` into the repository's content-addressed ``objects/``, in the
    listing's order; objects deleted between listing and copying are left out (counted)."""
    prev = {o["key"]: o for o in (previous or {}).get("artifacts", {}).get("objects", [])}
    known = repo.trusted_shas()
    lock = threading.Lock()
    listing = list(source.list())
    objects: list[dict[str, Any] | None] = [None] * len(listing)
    todo: list[int] = []
    for n, info in enumerate(listing):
        before = prev.get(info.key)
        if before and before["size"] == info.size and before.get("token") == info.token and info.token:
            stats.reused_checksums += 1
            if before["sha256"] in known:
                stats.skipped_present += 1
                objects[n] = {
                    "key": info.key,
                    "size": info.size,
                    "sha256": before["sha256"],
                    "token": info.token,
                }
                continue
        todo.append(n)
    source_root = source.root if isinstance(source, LocalStore) else None
    repo_root = repo.local_root
    objects_dir = str(repo_root / "objects") if repo_root is not None else ""
    if repo_root is not None:
        os.makedirs(objects_dir, exist_ok=True)
    made: set[str] = set()

    def object_path(sha: str) -> str:
        folder = os.path.join(objects_dir, sha[:2])
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        return os.path.join(folder, sha)

    def claim(sha: str, size: int) -> bool:
        """True for the one copy that adds ``sha`` to the repository (counted), False if held."""
        with lock:
            if sha in known:
                stats.skipped_present += 1
                return False
            known.add(sha)
            stats.copied += 1
            stats.bytes_copied += size
            return True

    def copy_batch(batch: Sequence[int]) -> list[tuple[int, str | None, int]]:
        """(index, checksum, size) of each object as copied; checksum None: it vanished."""
        done: list[tuple[int, str | None, int]] = []
        with tempfile.TemporaryDirectory(prefix="mlflow-ci-backup-") as tmp:
            scratch = Path(tmp) / "obj"
            for n in batch:
                info = listing[n]
                try:
                    if source_root is not None:
                        path = source_root / info.key
                    else:
                        source.get(info.key, scratch)
                        path = scratch
                    if repo_root is not None and info.size <= SMALL:
                        # Small: read once, hash, and write straight under its final name.  Safe
                        # without a temporary name: only objects a published manifest names are
                        # trusted, so one torn by a crash is written again by the next backup.
                        with open(path, "rb") as fh:
                            data = fh.read()
                        sha = hashlib.sha256(data).hexdigest()
                        if claim(sha, len(data)):
                            with open(object_path(sha), "wb") as out:
                                out.write(data)
                        done.append((n, sha, len(data)))
                        continue
                    if repo_root is not None:
                        # One read: hash while copying into the repository, then name the copy by its hash.
                        hasher = hashlib.sha256()
                        incoming = os.path.join(objects_dir, f".in-{n}.tmp")
                        size = _copy_hashing(str(path), incoming, hasher)
                        sha = hasher.hexdigest()
                        if claim(sha, size):
                            os.replace(incoming, object_path(sha))
                        else:
                            os.unlink(incoming)
                    else:
                        sha = sha256_file(path)
                        size = path.stat().st_size
                        if claim(sha, size):
                            repo.store.put(path, object_key(sha))
                except (FileNotFoundError, InfraError):
                    # Deleted between listing and copying (e.g. by `mlflow gc`): not part of this backup.
                    done.append((n, None, 0))
                    continue
                done.append((n, sha, size))
        return done

    remote = source_root is None or repo_root is None
    for n, sha, size in parallel.map_batches(copy_batch, todo, threads=parallel.copy_threads(remote=remote)):
        info = listing[n]
        if sha is None:
            stats.vanished += 1
        else:
            # The size as copied (a file rewritten since the listing is backed up as it now is).
            objects[n] = {"key": info.key, "size": size, "sha256": sha, "token": info.token}
    return [o for o in objects if o is not None]


def _snapshot_db(backend: Backend, staging: Path, stem: str, **kw: Any) -> dict[str, Any]:
    """The dump's manifest entry; the caller adds ``dump_sha256`` (the backend's dump is hashed
    while the artifacts are copied)."""
    dump = staging / f"{stem}{backend.dump_suffix}"
    snap = backend.snapshot(dump, **kw)
    return {
        "kind": backend.kind,
        "uri": redact(backend.uri),
        "dump": dump.name,
        "dump_size": dump.stat().st_size,
        "tool": snap.tool,
        "schema_revision": snap.schema_revision,
        "row_counts": snap.row_counts,
        "sample": snap.sample,
    }


def manifest_text(manifest: Mapping[str, Any]) -> str:
    """The manifest as indented JSON, one artifact per line (10,000 artifacts: 10,000 lines, not
    60,000), the artifacts written by the C encoder."""
    objects = manifest["artifacts"]["objects"]
    placeholder = "\u0000objects\u0000"
    shell = {**manifest, "artifacts": {**manifest["artifacts"], "objects": placeholder}}
    text = json.dumps(shell, indent=1, sort_keys=True)
    encode = json.JSONEncoder(sort_keys=True).encode
    body = "[\n" + ",\n".join("   " + encode(o) for o in objects) + "\n  ]" if objects else "[]"
    return text.replace(json.dumps(placeholder), body, 1) + "\n"


def new_backup_id() -> str:
    """Sortable by time (microseconds, so backups taken in the same second still order right)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def take_backup(
    *,
    backend_store_uri: str,
    artifacts_uri: str,
    destination: str,
    auth_db_uri: str | None = None,
    keep: int | None = None,
    sample_runs: int = 25,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Take one backup and return its manifest (plus copy statistics)."""
    env = dict(os.environ if env is None else env)
    backend = backend_for(backend_store_uri)
    auth = backend_for(auth_db_uri) if auth_db_uri else None
    backend.check_tools()
    if auth:
        auth.check_tools()
    source = store_for(artifacts_uri, env)
    source.probe()
    repo = BackupRepo.open(destination, env)
    if isinstance(repo.store, LocalStore):
        repo.store.root.mkdir(parents=True, exist_ok=True)
        repo.store.durable = False  # one sync before the manifest is published, not one fsync per object
    else:
        repo.store.probe()
    backup_id = new_backup_id()
    timings: dict[str, float] = {}
    with repo.lock():
        _remove_partials(repo)
        previous_id = repo.latest()
        previous = repo.manifest(previous_id) if previous_id else None
        local_root = repo.local_root
        staging_ctx: contextlib.AbstractContextManager[str]
        if local_root is not None:
            staging = local_root / "backups" / f".partial-{backup_id}"
            staging.mkdir(parents=True)
            staging_ctx = contextlib.nullcontext(str(staging))
        else:
            staging_ctx = tempfile.TemporaryDirectory(prefix="mlflow-ci-backup-")
        published = False
        with staging_ctx as staging_name:
            staging = Path(staging_name)
            try:
                t0 = time.monotonic()
                with output.step(f"database snapshot ({backend.kind})"):
                    db = _snapshot_db(backend, staging, "backend", sample_runs=sample_runs)
                    # The finished dump is hashed on another thread while the artifacts are copied.
                    dump_hash = parallel.Background(sha256_file, staging / db["dump"])
                timings["database"] = time.monotonic() - t0
                t0 = time.monotonic()
                stats = _Copied()
                with output.step(f"artifacts from {artifacts_uri}"):
                    objects = _copy_artifacts(source, repo, previous, stats)
                timings["artifacts"] = time.monotonic() - t0
                db["dump_sha256"] = dump_hash.result()
                auth_info = None
                if auth:
                    t0 = time.monotonic()
                    with output.step(f"auth database snapshot ({auth.kind})"):
                        auth_info = _snapshot_db(auth, staging, "auth", sample_runs=0)
                        auth_info["dump_sha256"] = sha256_file(staging / auth_info["dump"])
                        auth_info.pop("sample", None)
                    timings["auth"] = time.monotonic() - t0
                manifest = {
                    "format": FORMAT,
                    "id": backup_id,
                    "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "previous": previous_id,
                    "mlflow_version": _mlflow_version(),
                    "mlflow_ci_version": __version__,
                    "backend": db,
                    "auth": auth_info,
                    "artifacts": {
                        "uri": artifacts_uri,
                        "scheme": store_scheme(artifacts_uri),
                        "count": len(objects),
                        "bytes": sum(o["size"] for o in objects),
                        "objects": objects,
                    },
                    "stats": {**stats.__dict__, "seconds": {k: round(v, 3) for k, v in timings.items()}},
                }
                (staging / MANIFEST).write_text(manifest_text(manifest))
                repo.store.flush()
                _publish(repo, staging, backup_id)
                published = True
            finally:
                if local_root is not None and not published:
                    shutil.rmtree(staging, ignore_errors=True)
        if keep:
            manifest["pruned"] = prune(repo, keep=keep)
    return manifest


def _publish(repo: BackupRepo, staging: Path, backup_id: str) -> None:
    root = repo.local_root
    if root is not None:
        _fsync_tree(staging)
        final = root / "backups" / backup_id
        os.rename(staging, final)
        _fsync_dir(final.parent)
    else:
        for path in sorted(staging.iterdir(), key=lambda p: p.name == MANIFEST):
            repo.store.put(path, f"backups/{backup_id}/{path.name}")  # manifest last: the commit point
    repo.store.put_bytes(f"{backup_id}\n".encode(), LATEST)


def _remove_partials(repo: BackupRepo) -> None:
    root = repo.local_root
    if root is None or not (root / "backups").is_dir():
        return
    for leftover in (root / "backups").glob(".partial-*"):
        output.warning(f"removing {leftover.name}, left by a backup that did not finish")
        shutil.rmtree(leftover, ignore_errors=True)
    for stray in (root / "objects").glob(".*.tmp") if (root / "objects").is_dir() else ():
        stray.unlink(missing_ok=True)


def prune(repo: BackupRepo, *, keep: int) -> dict[str, Any]:
    """Keep the newest ``keep`` complete backups; delete older sets and objects no manifest names.

    With no backup to delete the objects are not swept (listing every object of a large
    repository costs more than the rest of a small backup): what a killed backup left is never
    trusted, and goes with the next sweep."""
    ids = repo.backup_ids()
    doomed = ids[:-keep] if keep > 0 else []
    if not doomed:
        return {"backups_removed": [], "objects_removed": 0}
    for backup_id in doomed:
        for info in list(repo.store.list(f"backups/{backup_id}/")):
            if info.key.endswith(MANIFEST):
                continue
            repo.store.delete(info.key)
        repo.store.delete(f"backups/{backup_id}/{MANIFEST}")
        if repo.local_root is not None:
            shutil.rmtree(repo.local_root / "backups" / backup_id, ignore_errors=True)
    referenced: set[str] = set()
    for backup_id in repo.backup_ids():
        referenced.update(o["sha256"] for o in repo.manifest(backup_id)["artifacts"]["objects"])
    removed = 0
    for info in list(repo.store.list("objects/")):
        if info.key.rsplit("/", 1)[-1] not in referenced:
            repo.store.delete(info.key)
            removed += 1
    return {"backups_removed": doomed, "objects_removed": removed}


def _mlflow_version() -> str:
    # From the installed distribution's metadata: importing mlflow for its version costs seconds.
    from importlib.metadata import PackageNotFoundError, version

    for distribution in ("mlflow", "mlflow-skinny"):
        with contextlib.suppress(PackageNotFoundError):
            return version(distribution)
    import mlflow

    return str(mlflow.__version__)


# --------------------------------------------------------------------------------------------
# The command


def backup_command(*, backend_store_uri: str | None, artifacts_uri: str | None, destination: str | None,
                   auth_db_uri: str | None, keep: int | None, policy_path: Path | None,
                   as_json: bool) -> int:  # fmt: skip
    from .cli import emit_json
    from .server_profile import resolve_ops

    ops = resolve_ops(policy_path, backend_store_uri=backend_store_uri, artifacts_uri=artifacts_uri,
                      destination=destination, auth_db_uri=auth_db_uri, keep=keep)  # fmt: skip
    if not ops.destination:
        raise ConfigError(
            "No backup destination.", hint="Pass --to DEST or set backup.destination in mlflow-ci.yaml."
        )
    manifest = take_backup(backend_store_uri=ops.backend_store_uri, artifacts_uri=ops.artifacts_uri,
                           destination=ops.destination, auth_db_uri=ops.auth_db_uri, keep=ops.keep,
                           sample_runs=ops.backup.sample_runs)  # fmt: skip
    summary = summarize(manifest, ops.destination)
    output.set_output("backup_id", manifest["id"])
    output.write_step_summary(
        f"### mlflow-ci backup `{manifest['id']}`\n\n| what | value |\n|---|---|\n"
        + "\n".join(f"| {k} | {v} |" for k, v in summary.items() if k != "destination")
    )
    if as_json:
        emit_json(summary)
    else:
        output.info(
            f"backup {manifest['id']} written to {ops.destination}: schema {summary['schema_revision']}, "
            f"{summary['rows']} rows in {summary['tables']} tables, {summary['artifacts']} artifacts "
            f"({summary['artifact_bytes']} bytes; {summary['objects_copied']} copied, "
            f"{summary['objects_already_present']} already in the repository)."
        )
    return 0


def summarize(manifest: Mapping[str, Any], destination: str) -> dict[str, Any]:
    db = manifest["backend"]
    return {
        "id": manifest["id"],
        "destination": destination,
        "backend": db["kind"],
        "schema_revision": db["schema_revision"],
        "tables": len(db["row_counts"]),
        "rows": sum(db["row_counts"].values()),
        "artifacts": manifest["artifacts"]["count"],
        "artifact_bytes": manifest["artifacts"]["bytes"],
        "objects_copied": manifest["stats"]["copied"],
        "objects_already_present": manifest["stats"]["skipped_present"],
        "auth_database": bool(manifest.get("auth")),
        "seconds": manifest["stats"]["seconds"],
    }
