"""A lease on one registered model, kept in MLflow itself, so registry changes never interleave.

MLflow has no compare-and-set on aliases or tags, but it has one atomic primitive every backend
enforces: a registered-model name is unique (a primary key).  The lease on model ``M`` is a
registered model named ``mlflow-ci.lock.M``:

* **acquire** = ``create_registered_model("mlflow-ci.lock.M", tags={owner, operation, actor, ...})``.
  The insert and its tags are one transaction; of any number of concurrent creators exactly one
  succeeds, the others get ``RESOURCE_ALREADY_EXISTS``.  No timing assumption is involved.
* **release** = delete it, after checking it still carries our owner token.
* **expiry**: a holder that crashed leaves the lock behind.  It expires ``lease_seconds`` after its
  creation (the server's timestamp).  Breaking an expired lease renames it to
  ``mlflow-ci.lock.M.broken.<owner>``: the name embeds the stale owner's token, so two breakers of
  the same stale lease cannot both break something (the second rename hits an existing name), and a
  breaker that read an old holder can never rename a newer lease (its tombstone name is taken).
  Tombstones are kept as the record of a crash.
  A lease whose holder ran on this same host and whose process is gone is stale at once (the
  common "CI job or laptop crashed" case); across hosts only expiry counts.
* **fencing**: before its commit step (the alias write) a holder calls :meth:`Lease.check`, which
  re-reads the lock and aborts unless it is still ours with at least ``margin`` seconds left.

Guarantees: at most one holder at a time, as long as a holder's commit step ends within the fencing
margin after its check (the HTTP timeout is far shorter) and the clocks of the machines breaking
leases are within a few seconds of the server's (NTP).  A lease that is not released (crash) blocks
the model for at most ``lease_seconds``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from mlflow_ci.core.errors import ConcurrentChange
from mlflow_ci.mlflowio.registry import Connection, error_code, mlflow_errors
from mlflow_ci.mlflowio.tags import (
    LEASE_ACTOR,
    LEASE_BROKEN_BY,
    LEASE_HOST,
    LEASE_OPERATION,
    LEASE_OWNER,
    LEASE_SECONDS,
)

LOCK_PREFIX = "mlflow-ci.lock."


def lock_name(model: str) -> str:
    return f"{LOCK_PREFIX}{model}"


def is_lock_model(name: str) -> bool:
    return name.startswith(LOCK_PREFIX)


@dataclass(frozen=True)
class Holder:
    owner: str
    operation: str
    actor: str
    host: str
    created: float
    seconds: int

    @property
    def expires(self) -> float:
        return self.created + self.seconds

    def is_stale(self, now: float) -> bool:
        """Expired, or held by a process of this very host that no longer exists (a crash here)."""
        if now > self.expires:
            return True
        host, _, pid = self.host.rpartition(":")
        if host != socket.gethostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def describe(self) -> str:
        until = dt.datetime.fromtimestamp(self.expires, dt.timezone.utc).isoformat(timespec="seconds")
        return f"{self.operation} by {self.actor} on {self.host} (lease until {until})"


def _holder(rm: Any) -> Holder:
    tags = rm.tags or {}
    return Holder(
        owner=tags.get(LEASE_OWNER, "?"),
        operation=tags.get(LEASE_OPERATION, "?"),
        actor=tags.get(LEASE_ACTOR, "?"),
        host=tags.get(LEASE_HOST, "?"),
        created=(rm.creation_timestamp or 0) / 1000.0,
        seconds=int(tags.get(LEASE_SECONDS, "300")),
    )


@dataclass
class Lease:
    conn: Connection
    model: str
    owner: str
    seconds: int
    created: float
    released: bool = field(default=False)

    @property
    def name(self) -> str:
        return lock_name(self.model)

    def remaining(self) -> float:
        return self.created + self.seconds - time.time()

    def check(self, margin: float | None = None) -> None:
        """Fencing: raise ConcurrentChange unless the lease is still ours with ``margin`` s left."""
        from mlflow.exceptions import MlflowException

        margin = min(120.0, self.seconds / 2) if margin is None else margin
        with mlflow_errors(self.conn.server, f"checking the registry lease on model {self.model!r}"):
            try:
                current = _holder(self.conn.client.get_registered_model(self.name))
            except MlflowException as exc:
                if error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                    raise
                current = None
        if current is None or current.owner != self.owner:
            raise ConcurrentChange(
                f"The registry lease on model {self.model!r} was lost (it expired and was taken over); "
                "this change was not applied."
            )
        if self.remaining() < margin:
            raise ConcurrentChange(
                f"The registry lease on model {self.model!r} has only {self.remaining():.0f}s left; "
                "this change "
                "was not applied.",
                hint="Raise registry.lease_seconds if registry changes are legitimately slow.",
            )

    def release(self) -> None:
        if self.released:
            return
        from mlflow.exceptions import MlflowException

        self.released = True
        with mlflow_errors(self.conn.server, f"releasing the registry lease on model {self.model!r}"):
            client = self.conn.client
            try:
                current = _holder(client.get_registered_model(self.name))
            except MlflowException as exc:
                if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                    return
                raise
            if current.owner == self.owner:
                try:
                    client.delete_registered_model(self.name)
                except MlflowException as exc:
                    if error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                        raise

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(
    conn: Connection,
    model: str,
    *,
    operation: str,
    actor: str,
    seconds: int = 300,
    wait: float = 0.0,
    poll: float = 0.5,
) -> Lease:
    """Take the lease on ``model`` or raise :class:`ConcurrentChange` naming the holder.

    ``wait=0`` fails at once when another change holds the lease (promotions: the loser exits with
    a clear message); ``wait>0`` retries for that long (registration, verification).
    """
    from mlflow.exceptions import MlflowException

    owner = uuid.uuid4().hex
    tags = {
        LEASE_OWNER: owner,
        LEASE_OPERATION: operation,
        LEASE_ACTOR: actor,
        LEASE_HOST: f"{socket.gethostname()}:{os.getpid()}",
        LEASE_SECONDS: str(seconds),
    }
    name = lock_name(model)
    deadline = time.monotonic() + wait
    client = conn.client
    while True:
        with mlflow_errors(conn.server, f"taking the registry lease on model {model!r}"):
            try:
                rm = client.create_registered_model(
                    name,
                    tags=tags,
                    description=f"Registry lease held by mlflow-ci for model {model!r}. Do not edit; "
                    "it disappears when the change ends and expires on its own.",
                )
                return Lease(
                    conn, model, owner, seconds, (rm.creation_timestamp or time.time() * 1000) / 1000.0
                )
            except MlflowException as exc:
                if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                    raise
            try:
                holder = _holder(client.get_registered_model(name))
            except MlflowException as exc:
                if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                    continue  # released between our two calls: try again at once
                raise
            if holder.is_stale(time.time()):
                _break(conn, name, holder, owner)
                continue
        if time.monotonic() >= deadline:
            raise ConcurrentChange(
                f"Another registry change holds model {model!r}: {holder.describe()}. Nothing was changed.",
                hint="Wait for it to finish and run this again; "
                "if its process died, the lease expires on its own.",
            )
        time.sleep(poll)


def _break(conn: Connection, name: str, holder: Holder, breaker: str) -> None:
    """Rename an expired lease to its tombstone; losing this race to another breaker is fine."""
    from mlflow.exceptions import MlflowException

    client = conn.client
    tomb = f"{name}.broken.{holder.owner}"
    try:
        client.rename_registered_model(name, tomb)
    except MlflowException as exc:
        if error_code(exc) in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
            return
        raise
    with contextlib.suppress(MlflowException):
        client.set_registered_model_tag(tomb, LEASE_BROKEN_BY, f"{breaker} at {time.time():.0f}")
