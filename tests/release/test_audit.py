"""The audit log and the registry lease: tamper evidence, out-of-band detection, lease semantics.

Unit tests replay synthetic chains; integration tests edit a real server's log and registry by
hand, as a person with write access could, and check that `mlflow-ci audit --verify` notices.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import run_cli
from mlflow_ci.core.errors import ConcurrentChange
from mlflow_ci.mlflowio.registry import Connection
from mlflow_ci.mlflowio.tags import (
    AUDIT_ENTRY,
    AUDIT_HASH,
    LEASE_BROKEN_BY,
    LEASE_HOST,
    LEASE_OWNER,
    LEASE_SECONDS,
)
from mlflow_ci.release.audit import GENESIS, AuditLog, Entry, Stored, replay
from mlflow_ci.release.lease import acquire, lock_name
from registryflow import release, write_policy

# --- unit: replaying chains ------------------------------------------------------------------


def chain(n: int) -> list[Stored]:
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        phase = "intent" if seq % 2 else "commit"
        e = Entry(
            seq=seq,
            model="m",
            op="promote",
            phase=phase,
            who="t",
            when="now",
            prev_hash=prev,
            ref=None if phase == "intent" else seq - 1,
            alias="champion",
            from_version=None,
            to_version=str(seq // 2 + seq % 2),
        )
        out.append(
            Stored(run_id=f"r{seq}", seq_tag=str(seq).zfill(10), hash_tag=e.digest, deleted=False, entry=e)
        )
        prev = e.digest
    return out


def test_intact_chain_replays_to_the_last_committed_alias() -> None:
    state = replay(chain(6))
    assert state.problems == []
    assert state.aliases == {"champion": "3"}
    assert state.pending is None


def test_edited_entry_breaks_its_hash() -> None:
    entries = chain(4)
    edited = replace(entries[1].entry, who="mallory")
    entries[1] = replace(entries[1], entry=edited)
    problems = replay(entries).problems
    assert any("#2" in p and "edited" in p for p in problems)


def test_rehashed_edit_still_breaks_the_link() -> None:
    entries = chain(4)
    edited = replace(entries[1].entry, who="mallory")
    entries[1] = replace(entries[1], entry=edited, hash_tag=edited.digest)  # the forger fixes the hash too
    problems = replay(entries).problems
    assert any("#3" in p and "does not link" in p for p in problems)


def test_missing_and_deleted_entries_are_reported() -> None:
    entries = chain(6)
    del entries[2]
    entries[3] = replace(entries[3], deleted=True)
    problems = replay(entries).problems
    assert any("missing" in p for p in problems)
    assert any("deleted" in p for p in problems)


def test_trailing_intent_is_pending_not_broken() -> None:
    state = replay(chain(5))
    assert state.problems == []
    assert state.pending is not None
    assert state.pending.seq == 5
    assert state.aliases == {"champion": "2"}


# --- integration: a real log on a real server ---------------------------------------------------


@pytest.fixture
def promoted(tracking_server, tmp_path: Path) -> tuple[str, str, Path]:
    """A model with one champion, released through mlflow-ci (an 8-entry log)."""
    model = f"audited-{uuid.uuid4().hex[:6]}"
    policy = write_policy(tmp_path / "p", model)
    assert release(tracking_server.url, policy, quality="fair")["champion"] == 0
    return tracking_server.url, model, policy


def verify(url: str, model: str, policy: Path) -> tuple[int, dict]:
    r = run_cli("audit", model, "--verify", "--policy", str(policy), "--tracking-uri", url, "--json")
    assert r.returncode in (0, 1), r.stderr
    (report,) = json.loads(r.stdout)
    return r.returncode, {c["name"]: c for c in report["checks"]}


def test_hand_edited_entry_is_detected(promoted) -> None:
    url, model, policy = promoted
    log = AuditLog(Connection(url))
    third = next(s for s in log.iter_entries(model) if s.entry and s.entry.seq == 3)
    body = json.loads(third.entry.canonical())
    body["who"] = "mallory"
    Connection(url).client.set_tag(
        third.run_id, AUDIT_ENTRY, json.dumps(body, sort_keys=True, separators=(",", ":"))
    )
    code, checks = verify(url, model, policy)
    assert code == 1
    assert checks["hash chain"]["verdict"] == "fail"
    assert "#3" in checks["hash chain"]["found"]
    assert "edited" in checks["hash chain"]["found"]


def test_rewritten_last_entry_is_caught_by_the_anchor(promoted) -> None:
    url, model, policy = promoted
    log = AuditLog(Connection(url))
    head = log.head(model)
    forged = replace(head.entry, who="mallory")
    client = Connection(url).client
    client.set_tag(head.run_id, AUDIT_ENTRY, forged.canonical())
    client.set_tag(head.run_id, AUDIT_HASH, forged.digest)  # consistent by itself
    code, checks = verify(url, model, policy)
    assert code == 1
    assert checks["hash chain"]["verdict"] == "pass"
    assert checks["head anchor"]["verdict"] == "fail"


def test_alias_moved_by_hand_is_out_of_band(promoted) -> None:
    url, model, policy = promoted
    client = Connection(url).client
    client.set_registered_model_alias(model, "challenger", "1")  # already there: no change
    client.set_registered_model_alias(model, "canary", "1")  # unmanaged alias: noted, not failed
    code, _ = verify(url, model, policy)
    assert code == 0
    client.delete_registered_model_alias(model, "champion")
    code, checks = verify(url, model, policy)
    assert code == 1
    assert checks["alias champion"]["verdict"] == "fail"
    assert "out of band" in checks["alias champion"]["detail"]


# --- the lease ---------------------------------------------------------------------------------


def test_lease_is_exclusive_and_names_its_holder(tracking_server) -> None:
    conn, model = Connection(tracking_server.url), f"lease-{uuid.uuid4().hex[:6]}"
    with acquire(conn, model, operation="promote v7 to @champion", actor="alice", seconds=60) as lease:
        with pytest.raises(ConcurrentChange) as err:
            acquire(conn, model, operation="rollback", actor="bob", seconds=60)
        assert "promote v7 to @champion by alice" in str(err.value)
        assert model in str(err.value)
        lease.check()
    again = acquire(conn, model, operation="after release", actor="bob", seconds=60)
    again.release()


def test_expired_lease_is_broken_into_a_tombstone(tracking_server) -> None:
    conn, model = Connection(tracking_server.url), f"lease-{uuid.uuid4().hex[:6]}"
    client = conn.client
    client.create_registered_model(
        lock_name(model),
        tags={LEASE_SECONDS: "0", LEASE_OWNER: "ghost", LEASE_HOST: "elsewhere:1"},
    )
    with acquire(conn, model, operation="after crash", actor="carol", seconds=60):
        tomb = client.get_registered_model(f"{lock_name(model)}.broken.ghost")
        assert LEASE_BROKEN_BY in tomb.tags


def test_lease_of_a_dead_local_process_is_stale(tracking_server) -> None:
    import socket

    conn, model = Connection(tracking_server.url), f"lease-{uuid.uuid4().hex[:6]}"
    conn.client.create_registered_model(
        lock_name(model),
        tags={
            LEASE_SECONDS: "3600",
            LEASE_OWNER: "dead",
            LEASE_HOST: f"{socket.gethostname()}:999999",
        },
    )
    acquire(conn, model, operation="x", actor="y", seconds=60).release()


def test_fencing_detects_a_lost_lease_and_release_spares_the_new_holder(tracking_server) -> None:
    conn, model = Connection(tracking_server.url), f"lease-{uuid.uuid4().hex[:6]}"
    mine = acquire(conn, model, operation="slow", actor="a", seconds=60)
    conn.client.delete_registered_model(lock_name(model))  # as if it expired and was broken
    theirs = acquire(conn, model, operation="fast", actor="b", seconds=60)
    with pytest.raises(ConcurrentChange, match="lost"):
        mine.check()
    mine.release()  # must not delete theirs
    theirs.check()
    theirs.release()
