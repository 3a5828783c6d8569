"""What every policy section shares: the file name, the environment prefix, the frozen model
that refuses unknown keys."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

POLICY_FILENAME = "mlflow-ci.yaml"
ENV_PREFIX = "MLFLOW_CI__"

EnvManager = Literal["local", "virtualenv", "uv"]

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Section(BaseModel):
    """A policy section: unknown keys are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_regexes(value: dict[str, str], what: str) -> dict[str, str]:
    """Every value must compile as a regular expression; the error names the key and the regex."""
    for key, pattern in value.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"{what} {key!r}: {pattern!r} is not a valid regular expression ({exc})"
            ) from None
    return value
