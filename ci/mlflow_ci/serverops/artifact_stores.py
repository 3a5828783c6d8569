"""Artifact stores (and backup destinations): a local folder, S3 or S3-compatible, Azure Blob.

One small :class:`ArtifactStore` protocol over "a flat namespace of objects under a root" and
one scheme → implementation table (:data:`STORES`).  Backups read a server's artifact store
through it, write their content-addressed objects and manifests through it, and restores write
into an empty store through it, so any store can be the source, the backup or the target.

Keys are ``/``-separated paths relative to the store's root.  ``ObjectInfo.token`` is a cheap
change marker (size + mtime for files, the ETag for object stores) that lets an incremental
backup reuse a checksum without reading the object again.

Credentials never come from the URI: S3 uses the usual ``AWS_*`` variables and
``MLFLOW_S3_ENDPOINT_URL`` for S3-compatible endpoints (as MLflow does); Azure uses
``AZURE_STORAGE_CONNECTION_STRING`` or ``AZURE_STORAGE_ACCESS_KEY`` (as MLflow does).
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import shutil
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol
from urllib.parse import urlparse

from mlflow_ci.core.errors import ConfigError, InfraError
from mlflow_ci.core.fsutil import atomic_writer


class ObjectInfo(NamedTuple):
    """One object of a listing (a named tuple: a store of 10,000s of objects lists them all)."""

    key: str
    size: int
    token: str


class ArtifactStore(Protocol):
    scheme: ClassVar[str]
    uri: str

    def probe(self) -> None:
        """Raise :class:`InfraError` (with advice) when the store cannot be reached or read."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def get(self, key: str, dest: Path) -> None: ...

    def put(self, src: Path, key: str) -> None:
        """Write an object; readers see the old object or the new, never a partial one."""
        ...

    def get_bytes(self, key: str) -> bytes | None:
        """The object's content, or ``None`` when it does not exist."""
        ...

    def put_bytes(self, data: bytes, key: str) -> None: ...

    def delete(self, key: str) -> None: ...

    def flush(self) -> None:
        """Make every completed ``put`` durable (object stores: already are)."""
        ...


class ConditionalStore(Protocol):
    """Compare-and-swap on one key, for the backup repository's lock (S3 and Azure Blob).

    ETags are opaque strings as the store gives them; every write is atomic."""

    uri: str

    def read_tagged(self, key: str) -> tuple[bytes, str] | None:
        """The object's content and ETag (from one response), or ``None`` when it does not exist."""
        ...

    def create_new(self, data: bytes, key: str) -> str | None:
        """Write ``key`` only if it does not exist: its ETag, or ``None`` when it already existed."""
        ...

    def replace_if(self, data: bytes, key: str, etag: str) -> str | None:
        """Overwrite ``key`` only if its ETag is still ``etag``: the new ETag, or ``None`` when it
        changed or is gone."""
        ...

    def delete_if(self, key: str, etag: str) -> bool:
        """Delete ``key`` only if its ETag is still ``etag``; whether it was deleted."""
        ...


_CLIENT_LOCK = threading.Lock()
_BY_NAME = operator.attrgetter("name")
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def _copy_hashing(src: str, dst: str, hasher: Any) -> int:
    """Copy ``src`` to ``dst`` feeding every block to ``hasher``; the number of bytes copied."""
    size = 0
    with open(src, "rb") as inp, open(dst, "wb") as out:
        while True:
            block = inp.read(1 << 20)
            if not block:
                break
            hasher.update(block)
            out.write(block)
            size += len(block)
    return size


def _make_folders(folder: str, made: set[str]) -> None:
    """``os.makedirs(folder, exist_ok=True)`` that creates only the levels below the nearest
    folder in ``made`` without looking each one up first (filling a store makes two new folders
    per run under one already made); every folder it leaves in place is added to ``made``."""
    missing = []
    current = folder
    while current not in made:
        parent = os.path.dirname(current)
        if parent == current:  # nothing known yet: let makedirs find out
            os.makedirs(folder, exist_ok=True)
            made.update(missing)
            made.add(folder)
            return
        missing.append(current)
        current = parent
    for level in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(level)
        made.add(level)


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


# --------------------------------------------------------------------------------------------
# Local folder


@dataclass
class LocalStore:
    """A folder. ``durable=False`` skips the fsync per object; call :meth:`flush` once at the end
    (thousands of small artifacts: one sync instead of one fsync each)."""

    uri: str
    env: Mapping[str, str] = field(default_factory=dict)
    durable: bool = True
    scheme: ClassVar[str] = "file"

    @functools.cached_property
    def root(self) -> Path:
        # Resolved once: a restore asks for it once per object.
        parsed = urlparse(self.uri)
        path = parsed.path if parsed.scheme == "file" else self.uri
        return Path(path).resolve()

    def probe(self) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise InfraError(f"Artifact root {root} exists but is not a folder.")
        if root.exists() and not os.access(root, os.R_OK | os.X_OK):
            raise InfraError(f"Artifact root {root} is not readable by this user.")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Plain strings and scandir: listing 10,000s of artifacts must not be dominated by pathlib.
        base = str(self.root)
        start = os.path.join(base, prefix) if prefix else base
        if not os.path.exists(start):
            return
        if os.path.isfile(start):
            st = os.stat(start)
            yield ObjectInfo(prefix.strip("/"), st.st_size, f"{st.st_size}:{st.st_mtime_ns}")
            return
        cut = len(base) + 1
        posix = os.sep == "/"
        stack = [start.rstrip("/")]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as found:
                    entries = sorted(found, key=_BY_NAME)
            except FileNotFoundError:
                continue
            folders = []
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                    continue
                name = entry.name
                if name[0] == "." and name.endswith(".tmp"):  # our in-flight writes
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                key = entry.path[cut:] if posix else entry.path[cut:].replace(os.sep, "/")
                yield ObjectInfo(key, st.st_size, f"{st.st_size}:{st.st_mtime_ns}")
            # A folder's files first, then its subfolders, each in name order.
            stack.extend(reversed(folders))

    def sizes(self, keys: Iterable[str]) -> dict[str, int]:
        """key → size of each of ``keys`` that is a file here: one ``stat`` per key (checking
        10,000 restored objects by name costs an eighth of walking their 20,000 folders)."""
        base = str(self.root) + os.sep
        found: dict[str, int] = {}
        for key in keys:
            try:
                st = os.stat(base + key)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISREG(st.st_mode):
                found[key] = st.st_size
        return found

    def get(self, key: str, dest: Path) -> None:
        src = self.root / key
        try:
            shutil.copyfile(src, dest)
        except FileNotFoundError:
            raise InfraError(f"Object {key} is missing from {self.root}.") from None

    def put(self, src: Path, key: str) -> None:
        with atomic_writer(self.root / key, durable=self.durable) as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def put_bytes(self, data: bytes, key: str) -> None:
        with atomic_writer(self.root / key) as out:  # small pointers (``latest``): always synced
            out.write(data)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / key).unlink()

    def flush(self) -> None:
        if not self.durable:
            os.sync()

    def write_new(self, src: str, key: str, hasher: Any, made: set[str]) -> None:
        """Copy ``src`` to ``key`` in one read, hashing it; for filling an EMPTY store (no temp file:
        a failed restore is dropped as a whole). ``made`` caches folders already created."""
        target = os.path.join(str(self.root), key)
        folder = os.path.dirname(target)
        if folder not in made:
            _make_folders(folder, made)
        _copy_hashing(src, target, hasher)

    def write_new_bytes(self, data: bytes, key: str, made: set[str]) -> None:
        """Write ``data`` as ``key`` into an EMPTY store, as :meth:`write_new` does."""
        target = os.path.join(str(self.root), key)
        folder = os.path.dirname(target)
        if folder not in made:
            _make_folders(folder, made)
        fd = os.open(target, _NEW_FILE, 0o666)  # no file object: 10,000s of small writes
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def copy_in(self, src: Path, key: str, hasher: Any) -> None:
        """Write ``src`` as ``key`` reading it once, feeding every block to ``hasher`` as well."""
        with atomic_writer(self.root / key, durable=self.durable) as out, open(src, "rb") as inp:
            for block in iter(lambda: inp.read(1 << 20), b""):
                hasher.update(block)
                out.write(block)


# --------------------------------------------------------------------------------------------
# S3 and S3-compatible (SeaweedFS, MinIO, ...)


@dataclass
class S3Store:
    uri: str
    env: Mapping[str, str] = field(default_factory=dict)
    scheme: ClassVar[str] = "s3"
    _client: Any = field(default=None, init=False, repr=False)

    @property
    def bucket(self) -> str:
        return urlparse(self.uri).netloc

    @property
    def prefix(self) -> str:
        return urlparse(self.uri).path.strip("/")

    @property
    def endpoint(self) -> str | None:
        return self.env.get("MLFLOW_S3_ENDPOINT_URL") or self.env.get("AWS_ENDPOINT_URL") or None

    @property
    def client(self) -> Any:
        with _CLIENT_LOCK:  # copies run on threads; a boto3 session must not be shared while building
            return self._make_client()

    def _make_client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session(
                aws_access_key_id=self.env.get("AWS_ACCESS_KEY_ID"),
                aws_secret_access_key=self.env.get("AWS_SECRET_ACCESS_KEY"),
                aws_session_token=self.env.get("AWS_SESSION_TOKEN"),
                region_name=self.env.get("AWS_DEFAULT_REGION") or self.env.get("AWS_REGION") or "us-east-1",
            )
            self._client = session.client(
                "s3",
                endpoint_url=self.endpoint,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60,
                              s3={"addressing_style": "path"}, max_pool_connections=32),
            )  # fmt: skip
        return self._client

    def _key(self, key: str) -> str:
        return _join(self.prefix, key)

    def _advice(self, exc: Exception) -> InfraError:
        where = f"endpoint {self.endpoint}" if self.endpoint else "AWS S3"
        return InfraError(
            f"S3 bucket {self.bucket!r} at {where} could not be used: {exc}.",
            hint="Check MLFLOW_S3_ENDPOINT_URL (S3-compatible stores), AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "and that the bucket exists.",
        )

    def probe(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise self._advice(exc) from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        root = self.prefix
        full = self._key(prefix)
        if prefix and prefix.endswith("/"):
            full += "/"
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    rel = key[len(root) :].lstrip("/") if root else key
                    if not rel or rel.endswith("/"):
                        continue
                    yield ObjectInfo(rel, int(obj["Size"]), str(obj.get("ETag", "")).strip('"'))
        except InfraError:
            raise
        except Exception as exc:
            raise self._advice(exc) from exc

    def get(self, key: str, dest: Path) -> None:
        try:
            self.client.download_file(self.bucket, self._key(key), str(dest))
        except Exception as exc:
            raise self._advice(exc) from exc

    def put(self, src: Path, key: str) -> None:
        try:
            self.client.upload_file(str(src), self.bucket, self._key(key))
        except Exception as exc:
            raise self._advice(exc) from exc

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None
            raise self._advice(exc) from exc

    def put_bytes(self, data: bytes, key: str) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise self._advice(exc) from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._advice(exc) from exc

    # Conditional writes (``If-None-Match: *``, ``If-Match: <ETag>``): AWS S3 since 2024,
    # SeaweedFS (3.97 on; 4.17 on also under concurrent requests), MinIO.

    @staticmethod
    def _refused(exc: Exception) -> bool:
        """A precondition that did not hold (412), a concurrent conditional write (409), or the
        object gone (404): the caller looks again."""
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404") or status in (
            404,
            409,
            412,
        )

    def read_tagged(self, key: str) -> tuple[bytes, str] | None:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return bytes(got["Body"].read()), str(got["ETag"])
        except Exception as exc:
            if self._refused(exc):
                return None
            raise self._advice(exc) from exc

    def create_new(self, data: bytes, key: str) -> str | None:
        try:
            return str(
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")[
                    "ETag"
                ]
            )
        except Exception as exc:
            if self._refused(exc):
                return None
            raise self._advice(exc) from exc

    def replace_if(self, data: bytes, key: str, etag: str) -> str | None:
        try:
            return str(
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfMatch=etag)[
                    "ETag"
                ]
            )
        except Exception as exc:
            if self._refused(exc):
                return None
            raise self._advice(exc) from exc

    def delete_if(self, key: str, etag: str) -> bool:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key), IfMatch=etag)
            return True
        except Exception as exc:
            if self._refused(exc):
                return False
            raise self._advice(exc) from exc

    def flush(self) -> None:
        """A completed PUT is durable."""


# --------------------------------------------------------------------------------------------
# Azure Blob (wasbs://container@account.blob.core.windows.net/prefix, as MLflow writes it)


@dataclass
class AzureBlobStore:
    uri: str
    env: Mapping[str, str] = field(default_factory=dict)
    scheme: ClassVar[str] = "wasbs"
    _container: Any = field(default=None, init=False, repr=False)

    @property
    def container_name(self) -> str:
        return urlparse(self.uri).netloc.split("@", 1)[0]

    @property
    def account_host(self) -> str:
        return urlparse(self.uri).netloc.split("@", 1)[-1]

    @property
    def prefix(self) -> str:
        return urlparse(self.uri).path.strip("/")

    @property
    def container(self) -> Any:
        with _CLIENT_LOCK:
            return self._make_container()

    def _make_container(self) -> Any:
        if self._container is None:
            try:
                from azure.storage.blob import BlobServiceClient
            except ImportError:
                raise ConfigError(
                    "Azure Blob artifact stores need the azure-storage-blob package.",
                    hint="pip install azure-storage-blob (MLflow needs it too for wasbs:// artifacts).",
                ) from None
            conn = self.env.get("AZURE_STORAGE_CONNECTION_STRING")
            if conn:
                service = BlobServiceClient.from_connection_string(conn)
            elif self.env.get("AZURE_STORAGE_ACCESS_KEY"):
                service = BlobServiceClient(
                    f"https://{self.account_host}", credential=self.env["AZURE_STORAGE_ACCESS_KEY"]
                )
            else:
                raise ConfigError(
                    f"No Azure credentials for {self.uri}.",
                    hint="Set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCESS_KEY, as for MLflow itself.",
                )
            self._container = service.get_container_client(self.container_name)
        return self._container

    def _key(self, key: str) -> str:
        return _join(self.prefix, key)

    def _advice(self, exc: Exception) -> InfraError:
        return InfraError(
            f"Azure container {self.container_name!r} ({self.account_host}) could not be used: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}.",
            hint="Check AZURE_STORAGE_CONNECTION_STRING and that the container exists.",
        )

    def probe(self) -> None:
        try:
            if not self.container.exists():
                raise InfraError(f"Azure container {self.container_name!r} does not exist.")
        except (InfraError, ConfigError):
            raise
        except Exception as exc:
            raise self._advice(exc) from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        root = self.prefix
        try:
            for blob in self.container.list_blobs(name_starts_with=self._key(prefix) or None):
                rel = blob.name[len(root) :].lstrip("/") if root else blob.name
                if rel:
                    yield ObjectInfo(rel, int(blob.size), str(blob.etag).strip('"'))
        except Exception as exc:
            raise self._advice(exc) from exc

    def get(self, key: str, dest: Path) -> None:
        try:
            with open(dest, "wb") as fh:
                self.container.download_blob(self._key(key)).readinto(fh)
        except Exception as exc:
            raise self._advice(exc) from exc

    def put(self, src: Path, key: str) -> None:
        try:
            with open(src, "rb") as fh:
                self.container.upload_blob(self._key(key), fh, overwrite=True)
        except Exception as exc:
            raise self._advice(exc) from exc

    def get_bytes(self, key: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return bytes(self.container.download_blob(self._key(key)).readall())
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            raise self._advice(exc) from exc

    def put_bytes(self, data: bytes, key: str) -> None:
        try:
            self.container.upload_blob(self._key(key), data, overwrite=True)
        except Exception as exc:
            raise self._advice(exc) from exc

    def delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.container.delete_blob(self._key(key))
        except ResourceNotFoundError:
            pass
        except Exception as exc:
            raise self._advice(exc) from exc

    # Conditional writes: a create with ``If-None-Match: *`` (``overwrite=False``) and writes and
    # deletes with ``If-Match: <ETag>``.  (A blob lease would not do: its longest finite term is
    # 60 s, an infinite one never ends for a holder that died, and it carries no holder's name.)

    def read_tagged(self, key: str) -> tuple[bytes, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = self.container.download_blob(self._key(key))
            return bytes(downloader.readall()), str(downloader.properties.etag)
        except ResourceNotFoundError:
            return None
        except Exception as exc:
            raise self._advice(exc) from exc

    def create_new(self, data: bytes, key: str) -> str | None:
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        try:
            return str(
                self.container.get_blob_client(self._key(key)).upload_blob(data, overwrite=False)["etag"]
            )
        except (ResourceExistsError, ResourceModifiedError):
            return None
        except Exception as exc:
            raise self._advice(exc) from exc

    def replace_if(self, data: bytes, key: str, etag: str) -> str | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            blob = self.container.get_blob_client(self._key(key))
            written = blob.upload_blob(
                data, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified
            )
            return str(written["etag"])
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        except Exception as exc:
            raise self._advice(exc) from exc

    def delete_if(self, key: str, etag: str) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            self.container.delete_blob(
                self._key(key), etag=etag, match_condition=MatchConditions.IfNotModified
            )
            return True
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        except Exception as exc:
            raise self._advice(exc) from exc

    def flush(self) -> None:
        """A completed upload is durable."""


# --------------------------------------------------------------------------------------------
# The table

STORES: Mapping[str, type[LocalStore] | type[S3Store] | type[AzureBlobStore]] = {
    "file": LocalStore,
    "s3": S3Store,
    "wasbs": AzureBlobStore,
}

# Schemes MLflow itself accepts for --artifacts-destination that we can name but not copy.
KNOWN_UNSUPPORTED = {"gs": "Google Cloud Storage", "hdfs": "HDFS", "ftp": "FTP", "sftp": "SFTP"}


def store_scheme(uri: str) -> str:
    scheme = urlparse(uri).scheme.lower() if "://" in uri else "file"
    return {"wasb": "wasbs", "s3a": "s3"}.get(scheme, scheme)


def store_for(uri: str, env: Mapping[str, str] | None = None) -> ArtifactStore:
    """The store for ``uri`` (a path, ``file://``, ``s3://``, ``wasbs://``)."""
    scheme = store_scheme(uri)
    if scheme in KNOWN_UNSUPPORTED:
        raise ConfigError(
            f"{KNOWN_UNSUPPORTED[scheme]} ({scheme}://) artifact stores can be served by MLflow, but mlflow-ci "
            "cannot back them up or restore them yet.",
            hint="Supported for backup and restore: a local folder, s3:// (and S3-compatible endpoints), wasbs://.",
        )
    if scheme not in STORES:
        raise ConfigError(
            f"Artifact store URI {uri!r} has an unknown scheme {scheme!r}.",
            hint="Use a local path, s3://bucket/prefix or wasbs://container@account.blob.core.windows.net/prefix.",
        )
    return STORES[scheme](uri, dict(os.environ if env is None else env))
