"""The REFERENCE of ``mlflow-ci drift``, turned into a profile.

* a model URI (``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``models:/<model_id>``,
  ``runs:/<run_id>/<model path>``, a local model folder): resolved once through
  :mod:`mlflow_ci.mlflowio.modelref`; the profile is the one its training run logged with
  :func:`~mlflow_ci.monitoring.profile.log_profile`;
* ``runs:/<run_id>``: that run's logged profile;
* a profile file (``.json``) written by ``Profile.to_json``;
* CSV or Parquet data (a file, folder or glob): profiled here, chunk by chunk.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_ci.config import Monitoring
from mlflow_ci.core.errors import ConfigError
from mlflow_ci.mlflowio.modelref import ModelRef, is_model_uri, resolve
from mlflow_ci.mlflowio.registry import Connection, connect, get_run, mlflow_errors
from mlflow_ci.monitoring.profile import ARTIFACT_DIR, Profile, artifact_path
from mlflow_ci.monitoring.tabular import expand, reference_from_files

RUN_ONLY = re.compile(r"^runs:/([0-9a-f]{32})/?$")


@dataclass
class Reference:
    profile: Profile
    description: str
    kind: str  # model | run | profile | data
    model: ModelRef | None = None
    run_id: str | None = None
    tracking_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "kind": self.kind,
            "model": self.model.to_dict() if self.model else None,
            "run_id": self.run_id,
            "profile": self.profile.name,
            "rows": self.profile.rows,
        }


def parse_profile(raw: bytes | str, where: str) -> Profile:
    try:
        return Profile.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{where}: not a readable mlflow-ci profile ({exc}).") from None


def run_profile(conn: Connection, run_id: str, name: str, *, what: str) -> Profile:
    """The profile ``name`` logged by ``run_id``; a ConfigError says what to do when it is missing."""
    import mlflow.artifacts

    from mlflow_ci.mlflowio.tracking import client_settings

    get_run(conn, run_id)
    wanted = artifact_path(name)
    with mlflow_errors(conn.server, f"listing the profiles of run {run_id}"):
        found = [a.path for a in conn.client.list_artifacts(run_id, ARTIFACT_DIR)]
    if wanted not in found:
        names = ", ".join(Path(p).stem for p in found) or "none"
        raise ConfigError(
            f"{what} (run {run_id}) has no reference profile {name!r} ({wanted}; profiles found: {names}).",
            hint="Its training code must call mlflow_ci.monitoring.log_profile(features, predictions, "
            f"name={name!r}) inside the run, or set monitoring.profile to one of the names found.",
        )
    with (
        tempfile.TemporaryDirectory(prefix="mlflow-ci-profile-") as tmp,
        client_settings(conn.server),
        mlflow_errors(conn.server, f"downloading {wanted} of run {run_id}"),
    ):
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=wanted, dst_path=tmp, tracking_uri=conn.server
        )
        raw = Path(local).read_bytes()
    return parse_profile(raw, f"{wanted} of run {run_id}")


def load_reference(
    arg: str, *, tracking_uri: str | None, cfg: Monitoring, prediction_column: str | None = None
) -> Reference:
    """Turn the REFERENCE argument into a profile (see the module's docstring)."""
    name = cfg.profile
    m = RUN_ONLY.match(arg)
    if m:
        conn = connect(tracking_uri)
        return Reference(
            profile=run_profile(conn, m.group(1), name, what=f"run {m.group(1)}"),
            description=arg,
            kind="run",
            run_id=m.group(1),
            tracking_uri=conn.server,
        )
    if is_model_uri(arg):
        local_folder = not arg.startswith(("models:/", "runs:/"))
        ref = resolve(arg, tracking_uri=tracking_uri)
        if not ref.run_id:
            raise ConfigError(f"{arg}: the model records no training run, so it has no reference profile.")
        if local_folder:
            if not tracking_uri:
                raise ConfigError(
                    f"{arg}: a local model folder's profile lives on its training run (run {ref.run_id}); "
                    "give the tracking server with --tracking-uri."
                )
            conn = connect(tracking_uri)
        else:
            conn = connect(ref.tracking_uri or tracking_uri)
        return Reference(
            profile=run_profile(conn, ref.run_id, name, what=f"model {ref.label}"),
            description=f"{ref.label} ({ref.uri})",
            kind="model",
            model=ref,
            run_id=ref.run_id,
            tracking_uri=conn.server,
        )
    path = Path(arg)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise ConfigError(f"{path}: no such file (reference profile).")
        return Reference(
            profile=parse_profile(path.read_bytes(), str(path)), description=str(path), kind="profile"
        )
    files = expand([arg], what="reference data")
    columns = None
    if cfg.features is not None:
        columns = [*cfg.features, *([prediction_column] if prediction_column else [])]
    profile = reference_from_files(
        files,
        name=path.stem,
        prediction_column=prediction_column,
        bins=cfg.bins,
        max_categories=cfg.max_categories,
        categorical=cfg.categorical,
        columns=columns,
        batch_rows=cfg.batch_rows,
    )
    shown = arg if len(files) == 1 else f"{arg} ({len(files)} files)"
    return Reference(profile=profile, description=shown, kind="data")
