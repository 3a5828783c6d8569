"""``mlflow-ci backup``: one consistent snapshot of a tracking server's database, artifacts and auth database.

Order matters: the database is snapshotted first, then the artifacts are copied, then the auth
database.  A run that the snapshot knows about logged its artifacts before the snapshot was
taken, so every run in the backup finds its artifacts in it; objects written later are extra,
never missing.

Layout of a backup repository (a local folder or an ``s3://``/``wasbs://`` prefix)::

    packs/<id>-000.pack          small artifacts (up to 256 KiB) of backup <id>, one after another
    objects/ab/ab12...           larger artifact content, addressed by SHA-256
    backups/<id>/manifest.json   schema revision, row counts, every artifact's key, size, checksum
                                 and where its content is (a pack and offset, or loose)
    backups/<id>/backend.<ext>   the database dump (auth.<ext> for the auth database)
    latest                       the id of the newest complete backup

Content is shared by all backups: a later backup names the pack and offset (or the loose
object) an earlier one wrote.  Packs turn 10,000 small artifacts into one file to write, sync,
upload and read back, instead of 10,000.

Atomicity: on a local folder a pack is written under a temporary name, synced and renamed when
the copy is done, loose objects under a temporary name then renamed and synced together (one
sync for all of them), all before the manifest is published; only content a published manifest names is trusted by later
backups, so anything torn by a crash is written again.  On object stores each put is atomic.
On a local folder a backup is assembled in ``backups/.partial-<id>``, fsynced and renamed into
place, and only then is ``latest`` replaced (atomically).  On object stores the manifest is
written last and is the commit point.  A backup killed midway therefore leaves the previous one
intact and ``latest`` pointing at it; the leftovers are removed by the next run.

Incremental: an artifact whose key, size and change token (mtime, ETag) match the previous
manifest reuses its checksum without being read, and an object whose checksum the repository
already holds is not copied again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import json
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlflow_ci import __version__
from mlflow_ci.core import faults, output, parallel
from mlflow_ci.core.errors import ConfigError, InfraError
from mlflow_ci.core.redact import redact
from mlflow_ci.serverops.artifact_stores import (
    ArtifactStore,
    ConditionalStore,
    LocalStore,
    ObjectInfo,
    _copy_hashing,
    store_for,
    store_scheme,
)
from mlflow_ci.serverops.backends import Backend, backend_for

FORMAT = 2  # 2: small objects in packs (an object's "pack" and "offset"); 1: every object loose
READABLE_FORMATS = (1, 2)
MANIFEST = "manifest.json"
LATEST = "latest"
CHUNK = 1 << 20
PACKED = 256 << 10  # objects up to this size go into the backup's pack, larger ones stay loose
PACK_TARGET = 64 << 20  # a pack is closed, and the next begun, past this size
SPARSE = 0.5  # a pack whose bytes the newest backup names less than this share of is not reused


def pack_key(name: str) -> str:
    return f"packs/{name}.pack"


def sha256_file(path: str | Path, *, sync: bool = False) -> str:
    """The file's SHA-256 (``sync``: the file is made durable as well, on another thread while it
    is hashed: a database dump's write-out and its checksum take about as long, 0.07 and 0.1 s
    for 160 MB here)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        flushing = parallel.Background(os.fsync, fh.fileno()) if sync else None
        try:
            for block in iter(lambda: fh.read(CHUNK), b""):
                h.update(block)
        finally:
            if flushing is not None:
                flushing.result()
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
        if data.get("format") not in READABLE_FORMATS:
            raise ConfigError(
                f"Backup {backup_id} has manifest format {data.get('format')}; this mlflow-ci reads "
                f"{' and '.join(map(str, READABLE_FORMATS))}.",
                hint="Restore it with the mlflow-ci version that wrote it (the manifest's mlflow_ci_version).",
            )
        return dict(data)

    def object_shas(self) -> set[str]:
        """The loose objects' checksums."""
        return {info.key.rsplit("/", 1)[-1] for info in self.store.list("objects/")}

    def pack_sizes(self) -> dict[str, int]:
        """Every complete pack's name → size."""
        out = {}
        for info in self.store.list("packs/"):
            name = info.key.rsplit("/", 1)[-1]
            if name.endswith(".pack") and not name.startswith("."):
                out[name[: -len(".pack")]] = info.size
        return out

    def trusted_locations(self) -> dict[str, dict[str, Any]]:
        """Objects a new backup may reuse without copying: checksum → where it is held (``{}``:
        loose, under ``objects/``; else its ``pack`` and ``offset``).

        On a local folder objects are written without an fsync each and synced once before the
        manifest is published, so only objects that a complete manifest names are known durable;
        anything else (left by a killed backup) is copied again.  Object-store writes are atomic
        and durable, so there every loose object present counts.  A packed object is found only
        through a manifest; a pack that the newest backup names less than half of (runs deleted
        since) is not reused, so its live objects are packed again and the pack goes once the
        backups that name it are pruned.
        """
        loose = self.object_shas()
        packs = self.pack_sizes()
        out: dict[str, dict[str, Any]] = {} if self.local_root is not None else {sha: {} for sha in loose}
        ids = self.backup_ids()
        manifests = [self.manifest(backup_id) for backup_id in ids]
        live: dict[str, int] = {}
        for o in manifests[-1]["artifacts"]["objects"] if manifests else []:
            if "pack" in o:
                live[o["pack"]] = live.get(o["pack"], 0) + o["size"]
        usable = {name for name, size in packs.items() if live.get(name, 0) >= SPARSE * size}
        for manifest in manifests:
            for o in manifest["artifacts"]["objects"]:
                if "pack" in o:
                    if o["pack"] in usable:
                        out[o["sha256"]] = {"pack": o["pack"], "offset": o["offset"]}
                elif o["sha256"] in loose:
                    out.setdefault(o["sha256"], {})
        return out

    @contextlib.contextmanager
    def lock(self, holder: str, env: Mapping[str, str] | None = None) -> Iterator[RepoLock]:
        """One backup or prune at a time per repository (see :class:`StoreLock`): exit 3 naming
        the holder, after waiting up to ``MLFLOW_CI_LOCK_WAIT`` seconds (default 0) for it."""
        env = os.environ if env is None else env
        wait = _seconds(env, LOCK_WAIT_ENV, 0.0, minimum=0.0)
        root = self.local_root
        if root is None:
            ttl = _seconds(env, LOCK_TTL_ENV, LOCK_TTL_S, minimum=1.0)
            held = StoreLock(self.store, self.uri, holder, ttl=ttl, env=env)  # type: ignore[arg-type]
            held.acquire(wait)
            try:
                yield held
            finally:
                held.release()
            return
        root.mkdir(parents=True, exist_ok=True)
        with _FileLock(root / LOCK_KEY, holder, env) as file_lock:
            file_lock.acquire(wait)
            yield file_lock

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
# The repository's lock

LOCK_KEY = ".lock"
LOCK_TTL_S = 300.0  # an object-store lock not renewed for this long is taken over
LOCK_TTL_ENV = "MLFLOW_CI_LOCK_TTL"
LOCK_WAIT_ENV = "MLFLOW_CI_LOCK_WAIT"
LOCK_POLL_S = 1.0


def _seconds(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= minimum:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds of at least {minimum:g}.")
    return value


def _stamp(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


def _holder_info(holder: str, env: Mapping[str, str]) -> dict[str, Any]:
    info: dict[str, Any] = {"holder": holder, "host": socket.gethostname(), "pid": os.getpid()}
    if env.get("GITHUB_RUN_ID"):
        server, repository = (
            env.get("GITHUB_SERVER_URL", "https://github.com"),
            env.get("GITHUB_REPOSITORY", ""),
        )
        info["run"] = f"{server}/{repository}/actions/runs/{env['GITHUB_RUN_ID']}"
    return info


def _describe(info: Mapping[str, Any]) -> str:
    """``mlflow-ci backup <id> (pid 12 on host, since <time>[, <run url>])``."""
    where = f"pid {info.get('pid', '?')} on {info.get('host', '?')}, since {info.get('created', '?')}"
    if info.get("run"):
        where += f", {info['run']}"
    return f"{info.get('holder', 'an unnamed holder')} ({where})"


class RepoLock(Protocol):
    def check(self) -> None:
        """Raise :class:`InfraError` if the lock was lost: called before anything is published or deleted."""
        ...


class _FileLock:
    """A local repository's lock: ``flock`` on ``.lock``, which the kernel releases when the
    holder's process ends, however it ends; the file names the holder for whoever waits."""

    def __init__(self, path: Path, holder: str, env: Mapping[str, str]) -> None:
        self.path, self.info = path, _holder_info(holder, env)
        self.fd = -1

    def __enter__(self) -> _FileLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # releases the flock

    def acquire(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise InfraError(
                        f"Another backup or prune is writing to {self.path.parent} right now: "
                        f"{self._holder()} holds its lock ({self.path}).",
                        hint=f"Let it finish, or make this one wait for it: {LOCK_WAIT_ENV}=<seconds>.",
                    ) from None
                time.sleep(min(LOCK_POLL_S / 5, max(deadline - time.monotonic(), 0.01)))
        body = json.dumps({**self.info, "created": _stamp(time.time())}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, body, 0)

    def _holder(self) -> str:
        try:
            return _describe(json.loads(self.path.read_bytes()))
        except (OSError, ValueError):
            return "another process"

    def check(self) -> None:
        """A held flock cannot be lost."""


class StoreLock:
    """An object-store repository's lock: the object ``.lock``, written with conditional writes.

    Taken by creating it only if it does not exist (S3 ``If-None-Match: *``, Azure
    ``overwrite=False``); it names its holder (holder, host, pid, created) and when it
    ``expires``.  The holder renews it every third of its term (``MLFLOW_CI_LOCK_TTL``, 300 s), each
    time only if it is still the object it wrote (``If-Match`` on its ETag), and deletes it the same
    way when done.  A lock past its expiry (its holder died) is taken over with a write conditional
    on the ETag that was read, so of two processes taking it over only one wins.

    What this guarantees: one holder at a time, as long as the store honours conditional writes
    (checked each time the lock is taken) and the hosts' clocks agree to well within the term.
    A holder that cannot renew for a whole term (stalled, cut off) may have lost the lock to a
    successor: it finds out before it publishes a manifest or deletes anything (:meth:`check`)
    and stops with exit 3.  Writes already made by then are packs and content-addressed objects,
    which no published manifest names or which hold the same bytes, so nothing is lost either way.
    """

    def __init__(self, store: ConditionalStore, uri: str, holder: str, *, ttl: float,
                 env: Mapping[str, str]) -> None:  # fmt: skip
        self.store, self.uri, self.ttl = store, uri, ttl
        self.info = {**_holder_info(holder, env), "token": secrets.token_hex(8)}
        self.created = time.time()
        self.etag: str | None = None
        self.expires = 0.0
        self.lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> tuple[bytes, float]:
        now = time.time()
        body = {
            **self.info,
            "created": _stamp(self.created),
            "renewed": _stamp(now),
            "expires": _stamp(now + self.ttl),
        }
        return json.dumps(body, sort_keys=True).encode(), now + self.ttl

    def acquire(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            body, expires = self._body()
            etag = self.store.create_new(body, LOCK_KEY)
            if etag is None:
                etag = self._take_over_if_expired(body, deadline)
            if etag is not None:
                break
        self.etag, self.expires = etag, expires
        self._check_conditional_writes(body)
        self._renewer = threading.Thread(target=self._renew, name="mlflow-ci-lock", daemon=True)
        self._renewer.start()

    def _take_over_if_expired(self, body: bytes, deadline: float) -> str | None:
        """The new ETag if the present lock had expired and this process took it over; ``None``
        to try again (it was released or taken meanwhile); raises once ``deadline`` has passed."""
        current = self.store.read_tagged(LOCK_KEY)
        if current is None:
            return None  # released between the two requests
        raw, etag = current
        try:
            held = json.loads(raw)
            expires = dt.datetime.fromisoformat(held["expires"]).timestamp()
        except (ValueError, KeyError, TypeError):
            held, expires = {}, 0.0  # not a lock this code wrote: treated as expired
        if time.time() >= expires:
            taken = self.store.replace_if(body, LOCK_KEY, etag)
            if taken is not None:
                output.warning(f"took over the lock of {self.uri} from {_describe(held)}: it expired at "
                               f"{held.get('expires', '?')} without being renewed")  # fmt: skip
            return taken
        left = deadline - time.monotonic()
        if left <= 0:
            raise InfraError(
                f"Another backup or prune is writing to {self.uri} right now: {_describe(held)} holds its "
                f"lock until {held.get('expires')} (renewed while it works).",
                hint=f"Let it finish, or make this one wait for it: {LOCK_WAIT_ENV}=<seconds>. A lock whose "
                "holder died expires at the time it names and is then taken over.",
            )
        time.sleep(min(LOCK_POLL_S, left, max(expires - time.time(), 0.01)))
        return None

    def _check_conditional_writes(self, body: bytes) -> None:
        """A second create of the lock just taken must be refused; a store that accepts it ignores
        ``If-None-Match`` and cannot lock anything."""
        if self.store.create_new(body, LOCK_KEY) is None:
            return
        with contextlib.suppress(InfraError):
            self.store.delete(LOCK_KEY)
        raise InfraError(
            f"The store of {self.uri} ignores conditional writes (a second create-if-absent of {LOCK_KEY} "
            "succeeded), so a backup and a prune could not be kept apart on it.",
            hint="Use a store that honours If-None-Match and If-Match on PUT (AWS S3, SeaweedFS 4.17 or newer, "
            "MinIO, Azure Blob).",
        )

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            body, expires = self._body()
            try:
                etag = self.store.replace_if(body, LOCK_KEY, self.etag or "")
            except InfraError as exc:
                if time.time() >= self.expires:
                    self.lost = f"it could not be renewed before it expired ({exc.message})"
                    return
                continue  # a passing fault: the next renewal is still in time
            if etag is None:
                self.lost = "another process took it over after it expired unrenewed"
                return
            self.etag, self.expires = etag, expires

    def check(self) -> None:
        if self.lost is None and time.time() >= self.expires:
            self.lost = "it expired without being renewed"
        if self.lost is not None:
            raise InfraError(
                f"This process lost the lock of {self.uri}: {self.lost}; it stopped before publishing or "
                "deleting anything.",
                hint="Run it again; the repository holds what the last complete backup published.",
            )

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.lost is None and self.etag is not None:
            try:
                self.store.delete_if(LOCK_KEY, self.etag)
            except InfraError as exc:
                output.warning(f"could not remove the lock of {self.uri} ({exc.message}); it expires at "
                               f"{_stamp(self.expires)}")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Taking a backup


@dataclass
class _Copied:
    copied: int = 0
    reused_checksums: int = 0
    skipped_present: int = 0
    vanished: int = 0
    bytes_copied: int = 0
    packs_written: int = 0
    loose_written: int = 0  # into a local repository's objects/ (synced with the rest at the end)


class _PackWriter:
    """The backup's packs: small objects appended to one file, closed past ``PACK_TARGET``.

    On a local repository a pack is written as ``packs/.<name>.pack.tmp`` and renamed to its
    name when the copy is done (synced with the rest before the manifest is published); for an
    object store it is assembled in a local scratch file and uploaded whole.  Callers serialise
    :meth:`add` (the copy's lock)."""

    def __init__(self, repo: BackupRepo, backup_id: str, scratch: Path) -> None:
        self.repo, self.backup_id, self.scratch = repo, backup_id, scratch
        self.finished: list[str] = []
        self._name: str | None = None
        self._fh: Any = None
        self._size = 0
        self._path = Path()

    def add(self, data: bytes) -> dict[str, Any]:
        if self._fh is None or self._size + len(data) > PACK_TARGET:
            self._finish()
            self._begin()
        assert self._name is not None
        offset = self._size
        self._fh.write(data)
        self._size += len(data)
        return {"pack": self._name, "offset": offset}

    def _begin(self) -> None:
        self._name = f"{self.backup_id}-{len(self.finished):03d}"
        root = self.repo.local_root
        if root is not None:
            (root / "packs").mkdir(parents=True, exist_ok=True)
            self._path = root / "packs" / f".{self._name}.pack.tmp"
        else:
            self._path = self.scratch / f"{self._name}.pack"
        self._fh = open(self._path, "wb")  # noqa: SIM115 - closed in _finish (or abort)
        self._size = 0

    def _finish(self) -> None:
        if self._fh is None:
            return
        root = self.repo.local_root
        if root is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())  # durable before its name appears (the folder is synced last)
        self._fh.close()
        self._fh = None
        assert self._name is not None
        if root is not None:
            os.replace(self._path, root / pack_key(self._name))
        else:
            self.repo.store.put(self._path, pack_key(self._name))
            self._path.unlink()
        self.finished.append(self._name)

    def close(self) -> list[str]:
        """Finish the open pack; the names of every pack written."""
        self._finish()
        return self.finished

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._path.unlink(missing_ok=True)


def _copy_artifacts(source: ArtifactStore, repo: BackupRepo, previous: Mapping[str, Any] | None,
                    stats: _Copied, packs: _PackWriter) -> list[dict[str, Any]]:  # fmt: skip
    """Every object of ``source`` into the repository, in the listing's order: small ones into the
    backup's pack, larger ones under ``objects/`` by checksum; objects deleted between listing and
    copying are left out (counted)."""
    known = repo.trusted_locations()
    listing = list(source.list())
    objects, todo = _unchanged(listing, previous, known, stats)
    copy = _ObjectCopy(source, repo, listing, known, stats, packs)
    results = parallel.map_batches(copy.batch, todo, threads=parallel.copy_threads(remote=copy.remote))
    for n, sha, size, where in results:
        info = listing[n]
        if sha is None:
            stats.vanished += 1
        else:
            # The size as copied (a file rewritten since the listing is backed up as it now is).
            objects[n] = {"key": info.key, "size": size, "sha256": sha, "token": info.token, **where}
    return [o for o in objects if o is not None]


def _unchanged(listing: Sequence[ObjectInfo], previous: Mapping[str, Any] | None,
               known: Mapping[str, dict[str, Any]], stats: _Copied) -> tuple[list[dict[str, Any] | None], list[int]]:  # fmt: skip
    """The listing's manifest entries so far, and the indexes of the objects left to copy.

    An object whose key, size and change token match the previous manifest keeps its checksum
    without being read; if the repository already holds that content it needs no copy either,
    and its entry is filled in here."""
    prev = {o["key"]: o for o in (previous or {}).get("artifacts", {}).get("objects", [])}
    objects: list[dict[str, Any] | None] = [None] * len(listing)
    todo: list[int] = []
    for n, info in enumerate(listing):
        before = prev.get(info.key)
        if before and before["size"] == info.size and before.get("token") == info.token and info.token:
            stats.reused_checksums += 1
            if before["sha256"] in known:
                stats.skipped_present += 1
                objects[n] = {"key": info.key, "size": info.size, "sha256": before["sha256"], "token": info.token,
                              **known[before["sha256"]]}  # fmt: skip
                continue
        todo.append(n)
    return objects, todo


class _ObjectCopy:
    """The copy of a listing's objects into the repository, a batch at a time on the copy's
    threads: each object is read once and hashed on the way, then appended to the pack (small),
    moved under ``objects/`` (a local repository) or uploaded (an object store), unless the
    repository already holds its content (``known``, which the copy extends)."""

    def __init__(self, source: ArtifactStore, repo: BackupRepo, listing: Sequence[ObjectInfo],
                 known: dict[str, dict[str, Any]], stats: _Copied, packs: _PackWriter) -> None:  # fmt: skip
        self.source, self.repo, self.listing = source, repo, listing
        self.known, self.stats, self.packs = known, stats, packs
        self.lock = threading.Lock()
        # Plain strings for the paths: pathlib costs more than the read of a small artifact.
        self.source_root = str(source.root) + os.sep if isinstance(source, LocalStore) else None
        self.repo_root = repo.local_root
        self.objects_dir = str(self.repo_root / "objects") if self.repo_root is not None else ""
        if self.repo_root is not None:
            os.makedirs(self.objects_dir, exist_ok=True)
        self.made: set[str] = set()

    @property
    def remote(self) -> bool:
        """An object store on either side (the copy then runs on several threads)."""
        return self.source_root is None or self.repo_root is None

    def batch(self, batch: Sequence[int]) -> list[tuple[int, str | None, int, dict[str, Any]]]:
        """(index, checksum, size, location) of each object as copied; checksum None: it vanished."""
        done: list[tuple[int, str | None, int, dict[str, Any]]] = []
        with tempfile.TemporaryDirectory(prefix="mlflow-ci-backup-") as tmp:
            scratch = os.path.join(tmp, "obj")
            for n in batch:
                info = self.listing[n]
                try:
                    path = self._readable(info.key, scratch)
                    sha, size, where = self._copy(n, info.size, path)
                except (FileNotFoundError, InfraError):
                    # Deleted between listing and copying (e.g. by `mlflow gc`): not part of this backup.
                    done.append((n, None, 0, {}))
                    continue
                done.append((n, sha, size, where))
        return done

    def _readable(self, key: str, scratch: str) -> str:
        """A local file holding the object: the source's own, or a download into ``scratch``."""
        if self.source_root is not None:
            return self.source_root + key
        self.source.get(key, Path(scratch))
        return scratch

    def _copy(self, n: int, listed_size: int, path: str) -> tuple[str, int, dict[str, Any]]:
        """The object's checksum, size and location, copied if the repository lacks it."""
        if listed_size <= PACKED:
            packed = self._pack(path)
            if packed is not None:
                return packed
        if self.repo_root is not None:
            return self._move_in(n, path)
        return self._upload(path)

    def _pack(self, path: str) -> tuple[str, int, dict[str, Any]] | None:
        """Small: read once, hash, append to the pack (a torn pack is never named by a published
        manifest, so nothing in it is trusted).  None: it has grown past ``PACKED`` since it was
        listed, and is copied loose."""
        with open(path, "rb", buffering=0) as fh:
            data = fh.readall()
        if len(data) > PACKED:
            return None
        sha = hashlib.sha256(data).hexdigest()
        where, _ = self._hold(sha, len(data), functools.partial(self.packs.add, data))
        return sha, len(data), where

    def _move_in(self, n: int, path: str) -> tuple[str, int, dict[str, Any]]:
        """Into a local repository: one read, hashing while copying into the repository, then the
        copy named by its hash (synced with the rest at the end, see :func:`_make_durable`)."""
        hasher = hashlib.sha256()
        incoming = os.path.join(self.objects_dir, f".in-{n}.tmp")
        size = _copy_hashing(path, incoming, hasher)
        sha = hasher.hexdigest()
        where, new = self._hold(sha, size, dict)
        if new:
            os.replace(incoming, self._object_path(sha))
            self.stats.loose_written += 1
        else:
            os.unlink(incoming)
        return sha, size, where

    def _upload(self, path: str) -> tuple[str, int, dict[str, Any]]:
        """Into an object store: hashed first, for the key, then put if it is new there."""
        sha = sha256_file(path)
        size = os.path.getsize(path)
        where, new = self._hold(sha, size, dict)
        if new:
            self.repo.store.put(Path(path), object_key(sha))
        return sha, size, where

    def _hold(self, sha: str, size: int, place: Any) -> tuple[dict[str, Any], bool]:
        """Where ``sha`` is held, and whether this call added it (counted): ``place()`` gives
        the new location under the lock (the pack appends there; a loose object is ``{}``)."""
        with self.lock:
            if sha in self.known:
                self.stats.skipped_present += 1
                return self.known[sha], False
            self.known[sha] = where = place()
            self.stats.copied += 1
            self.stats.bytes_copied += size
            return where, True

    def _object_path(self, sha: str) -> str:
        folder = os.path.join(self.objects_dir, sha[:2])
        if folder not in self.made:
            os.makedirs(folder, exist_ok=True)
            self.made.add(folder)
        return os.path.join(folder, sha)


def _snapshot_db(backend: Backend, staging: Path, stem: str, *, sync: bool, **kw: Any) -> dict[str, Any]:
    """The dump's manifest entry, its checksum included (``kw``: :meth:`Backend.snapshot`'s);
    ``sync``: the dump is made durable here (on another thread while the artifacts are copied,
    so the backup's last sync waits for little more than the pack and the manifest)."""
    dump = staging / f"{stem}{backend.dump_suffix}"
    snap = backend.snapshot(dump, **kw)
    checksum = sha256_file(dump, sync=sync)
    return {
        "kind": backend.kind,
        "uri": redact(backend.uri),
        "dump": dump.name,
        "dump_size": dump.stat().st_size,
        "dump_sha256": checksum,
        "tool": snap.tool,
        "schema_revision": snap.schema_revision,
        "row_counts": snap.row_counts,
        "sample": snap.sample,
    }


def _snapshot_when(taken: threading.Event, failed: threading.Event, backend: Backend, staging: Path,
                   sample_runs: int, sync: bool) -> dict[str, Any]:  # fmt: skip
    """:func:`_snapshot_db` of the tracking database that sets ``taken`` once the snapshot's point
    in time is fixed (at the latest when it ends; on failure ``failed`` first); its seconds in
    ``seconds``."""
    t0 = time.monotonic()
    try:
        db = _snapshot_db(backend, staging, "backend", sync=sync, sample_runs=sample_runs, taken=taken)
    except BaseException:
        failed.set()
        taken.set()
        raise
    taken.set()
    return {**db, "seconds": time.monotonic() - t0}


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
    """Take one backup and return its manifest (plus copy statistics).

    The steps, in order: check that every store answers and every dump tool is there; then, under
    the repository's lock, snapshot the database, copy the artifacts (listed once the snapshot's
    point in time is fixed, while the dump is hashed and synced on another thread), snapshot the
    auth database, write the manifest, make it all durable and publish it; last, prune.
    """
    env = dict(os.environ if env is None else env)
    backend = backend_for(backend_store_uri)
    auth = backend_for(auth_db_uri) if auth_db_uri else None
    source, repo = _open_stores(backend, auth, artifacts_uri, destination, env)
    backup_id = new_backup_id()
    sync = repo.local_root is not None  # the dumps stay where they are written (object stores: uploaded)
    timings: dict[str, float] = {}
    with repo.lock(f"mlflow-ci backup {backup_id}", env) as held:
        faults.point("backup_locked")
        _remove_partials(repo)
        previous_id = repo.latest()
        previous = repo.manifest(previous_id) if previous_id else None
        with _staging(repo, backup_id) as staging:
            snapshot = _start_snapshot(backend, staging, sample_runs, sync=sync)
            t0 = time.monotonic()
            objects, stats = _back_up_artifacts(source, repo, backup_id, staging, previous, snapshot,
                                                artifacts_uri)  # fmt: skip
            timings["artifacts"] = time.monotonic() - t0
            db = snapshot.result()
            timings["database"] = db.pop("seconds")
            auth_info = None
            if auth:
                t0 = time.monotonic()
                auth_info = _snapshot_auth(auth, staging, sync=sync)
                timings["auth"] = time.monotonic() - t0
            manifest = _manifest(
                backup_id, previous_id, db, auth_info, artifacts_uri, objects, stats, timings
            )
            (staging / MANIFEST).write_text(manifest_text(manifest))
            _make_durable(repo, stats)
            held.check()
            _publish(repo, staging, backup_id)
        if keep:
            manifest["pruned"] = prune(repo, keep=keep, held=held)
    return manifest


def _open_stores(backend: Backend, auth: Backend | None, artifacts_uri: str, destination: str,
                 env: Mapping[str, str]) -> tuple[ArtifactStore, BackupRepo]:  # fmt: skip
    """The artifact store and the repository, once the dump tools are found and both answer:
    nothing is written before every part of the backup is known to work."""
    backend.check_tools()
    if auth:
        auth.check_tools()
    source = store_for(artifacts_uri, env)
    source.probe()
    repo = BackupRepo.open(destination, env)
    if isinstance(repo.store, LocalStore):
        repo.store.root.mkdir(parents=True, exist_ok=True)
    else:
        repo.store.probe()
    return source, repo


@contextlib.contextmanager
def _staging(repo: BackupRepo, backup_id: str) -> Iterator[Path]:
    """The folder the backup's own files (dumps, manifest) are assembled in: in a local repository
    ``backups/.partial-<id>``, renamed into place by :func:`_publish` and removed if the backup
    fails before; for an object store a scratch folder they are uploaded from."""
    root = repo.local_root
    if root is None:
        with tempfile.TemporaryDirectory(prefix="mlflow-ci-backup-") as scratch:
            yield Path(scratch)
        return
    staging = root / "backups" / f".partial-{backup_id}"
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _start_snapshot(backend: Backend, staging: Path, sample_runs: int, *, sync: bool) -> parallel.Background:
    """The tracking database's snapshot on another thread, returned once its point in time is
    fixed: the artifacts are listed from then on, while the dump is finished, checked and hashed
    there (:func:`_snapshot_when`)."""
    with output.step(f"database snapshot ({backend.kind})"):
        taken, failed = threading.Event(), threading.Event()
        snapshot = parallel.Background(_snapshot_when, taken, failed, backend, staging, sample_runs, sync)
        taken.wait()
        if failed.is_set():
            snapshot.result()  # raises what stopped it
    return snapshot


def _back_up_artifacts(source: ArtifactStore, repo: BackupRepo, backup_id: str, staging: Path,
                       previous: Mapping[str, Any] | None, snapshot: parallel.Background,
                       artifacts_uri: str) -> tuple[list[dict[str, Any]], _Copied]:  # fmt: skip
    """The artifacts' manifest entries and the copy's statistics, the backup's packs closed."""
    stats = _Copied()
    packs = _PackWriter(repo, backup_id, staging)
    with output.step(f"artifacts from {artifacts_uri}"):
        try:
            objects = _copy_artifacts(source, repo, previous, stats, packs)
            stats.packs_written = len(packs.close())
        except BaseException:
            packs.abort()
            snapshot.join()  # nothing left writing into the staging folder
            raise
    return objects, stats


def _snapshot_auth(auth: Backend, staging: Path, *, sync: bool) -> dict[str, Any]:
    with output.step(f"auth database snapshot ({auth.kind})"):
        info = _snapshot_db(auth, staging, "auth", sync=sync, sample_runs=0)
        info.pop("sample", None)
    return info


def _manifest(backup_id: str, previous_id: str | None, db: dict[str, Any], auth_info: dict[str, Any] | None,
              artifacts_uri: str, objects: list[dict[str, Any]], stats: _Copied,
              timings: Mapping[str, float]) -> dict[str, Any]:  # fmt: skip
    return {
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


def _make_durable(repo: BackupRepo, stats: _Copied) -> None:
    """Everything the backup wrote into a local repository outside its staging folder, on disk
    before the manifest is published: its packs were synced as each was finished (the dump on the
    snapshot's thread), so only their folder's entries are left, and a backup that wrote loose
    objects syncs the file systems once for all of them (one sync, not one per object).  Nothing
    else is flushed: unrelated writes of the host are not this backup's to wait for."""
    root = repo.local_root
    if root is None:
        return  # object stores: every put is durable
    if stats.loose_written:
        os.sync()
    for folder in (root / "packs", root):
        if folder.is_dir():
            _fsync_dir(folder)


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
    for folder in ("objects", "packs"):
        for stray in (root / folder).glob(".*.tmp") if (root / folder).is_dir() else ():
            stray.unlink(missing_ok=True)


def prune(repo: BackupRepo, *, keep: int, held: RepoLock | None = None) -> dict[str, Any]:
    """Keep the newest ``keep`` complete backups; delete older sets, and the loose objects and
    packs no remaining manifest names.

    A pack that a remaining backup still names is kept whole (backups stop reusing a pack once
    the newest names less than half of it, so it goes when they are pruned in turn).  With no
    backup to delete nothing is swept (listing every object of a large repository costs more
    than the rest of a small backup): what a killed backup left is never trusted, and goes with
    the next sweep.

    Under the repository's lock: ``held`` when the caller holds it (a backup prunes under its
    own), else taken here."""
    if held is None:
        with repo.lock("mlflow-ci prune") as lock:
            return prune(repo, keep=keep, held=lock)
    ids = repo.backup_ids()
    doomed = ids[:-keep] if keep > 0 else []
    if not doomed:
        return {"backups_removed": [], "objects_removed": 0, "packs_removed": 0, "objects_released": 0}
    released = {o["sha256"] for backup_id in doomed for o in repo.manifest(backup_id)["artifacts"]["objects"]}
    held.check()
    for backup_id in doomed:
        for info in list(repo.store.list(f"backups/{backup_id}/")):
            if info.key.endswith(MANIFEST):
                continue
            repo.store.delete(info.key)
        repo.store.delete(f"backups/{backup_id}/{MANIFEST}")
        if repo.local_root is not None:
            shutil.rmtree(repo.local_root / "backups" / backup_id, ignore_errors=True)
    loose: set[str] = set()
    packs: set[str] = set()
    for backup_id in repo.backup_ids():
        for o in repo.manifest(backup_id)["artifacts"]["objects"]:
            released.discard(o["sha256"])
            if "pack" in o:
                packs.add(o["pack"])
            else:
                loose.add(o["sha256"])
    removed = 0
    held.check()
    for info in list(repo.store.list("objects/")):
        if info.key.rsplit("/", 1)[-1] not in loose:
            repo.store.delete(info.key)
            removed += 1
    packs_removed = 0
    for name in repo.pack_sizes():
        if name not in packs:
            repo.store.delete(pack_key(name))
            packs_removed += 1
    return {"backups_removed": doomed, "objects_removed": removed, "packs_removed": packs_removed,
            "objects_released": len(released)}  # fmt: skip


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
    from mlflow_ci.serverops.profile import resolve_ops

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
    table = "\n".join(f"| {k} | {v} |" for k, v in summary.items() if k != "destination")
    text = (
        f"backup {manifest['id']} written to {ops.destination}: schema {summary['schema_revision']}, "
        f"{summary['rows']} rows in {summary['tables']} tables, {summary['artifacts']} artifacts "
        f"({summary['artifact_bytes']} bytes; {summary['objects_copied']} copied, "
        f"{summary['objects_already_present']} already in the repository)."
    )
    output.emit(summary, as_json=as_json, text=text,
                step_summary=f"### mlflow-ci backup `{manifest['id']}`\n\n| what | value |\n|---|---|\n{table}")  # fmt: skip
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
