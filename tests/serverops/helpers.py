"""Populate a real tracking server with the things a backup must keep."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def populate(tracking_uri: str, *, runs: int = 6, experiment: str = "exp_backup", model: str = "bk_model",
             payload_bytes: int = 2048) -> dict[str, Any]:  # fmt: skip
    """Runs with params, metric histories and an artifact each; a registered model with two
    versions (one from a run, one from a logged model) and an alias; a deleted run."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow_ci.mlflowio.tracking import client_settings

    with client_settings(tracking_uri):
        client = MlflowClient(tracking_uri)
        exp_id = client.create_experiment(f"{experiment}_{time.time_ns()}")
        run_ids = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(runs):
                run = client.create_run(exp_id, run_name=f"run_{i}", tags={"idx": str(i)})
                rid = run.info.run_id
                client.log_param(rid, "lr", str(0.1 * (i + 1)))
                client.log_param(rid, "seed", str(i))
                for step in range(3):
                    client.log_metric(
                        rid, "loss", 1.0 / (i + step + 1), step=step, timestamp=1_700_000_000_000 + step
                    )
                client.log_metric(rid, "auc", 0.5 + i / 100)
                if i == 0:  # values a restore must keep as they were, read back through the bulk API
                    client.log_metric(rid, "grad_norm", float("nan"), step=0, timestamp=1_700_000_000_000)
                    client.log_metric(rid, "grad_norm", 3.5, step=1, timestamp=1_700_000_000_001)
                f = Path(tmp) / f"notes_{i}.txt"
                f.write_bytes(rid.encode() + bytes((i + j) % 251 for j in range(payload_bytes - len(rid))))
                client.log_artifact(rid, str(f), artifact_path="files")
                client.set_terminated(rid)
                run_ids.append(rid)
        client.delete_run(run_ids[-1])
        client.create_registered_model(model)
        mv1 = client.create_model_version(model, f"runs:/{run_ids[0]}/files", run_id=run_ids[0])
        # MLflow 3: a version backed by a logged model whose source run is run 1.
        mlflow.set_experiment(experiment_id=exp_id)
        logged = mlflow.initialize_logged_model(name="lm", source_run_id=run_ids[1])
        mlflow.log_model_params({"kind": "test"}, model_id=logged.model_id)
        mlflow.finalize_logged_model(logged.model_id, "READY")
        mv2 = client.create_model_version(model, logged.artifact_location, run_id=run_ids[1],
                                          model_id=logged.model_id)  # fmt: skip
        client.set_registered_model_alias(model, "champion", mv2.version)
    return {
        "experiment_id": exp_id,
        "run_ids": run_ids,
        "model": model,
        "versions": [mv1.version, mv2.version],
        "logged_model_id": logged.model_id,
    }


def corrupt_stored(repo_dir: Path, obj: dict[str, Any]) -> Path:
    """Flip the first byte of a backup object's stored content (in its pack, or its loose file);
    the file changed."""
    from mlflow_ci.serverops.backup import object_key, pack_key

    path = repo_dir / (pack_key(obj["pack"]) if "pack" in obj else object_key(obj["sha256"]))
    offset = obj.get("offset", 0)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        first = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([first[0] ^ 0xFF]))
    return path


def apr1_hash(password: str, salt: str | None = None) -> str:
    """An Apache ``$apr1$`` (MD5-crypt) htpasswd hash, from ``openssl passwd -apr1`` (nginx reads
    it on every platform; people make theirs with ``htpasswd -B``, bcrypt, as the docs say)."""
    args = ["openssl", "passwd", "-apr1", "-stdin", *(["-salt", salt] if salt else [])]
    done = subprocess.run(args, input=password + "\n", capture_output=True, text=True, check=True)
    return done.stdout.strip()


def htpasswd_line(user: str, password: str, salt: str | None = None) -> str:
    """One line of an nginx ``auth_basic_user_file``."""
    return f"{user}:{apr1_hash(password, salt)}\n"
