"""Secrets kept out of what mlflow-ci prints and writes."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"^([A-Za-z][\w+.-]*://[^:/@]*):[^@]*@")


def redact(uri: str) -> str:
    """The URI with any password hidden, for logs and manifests (``user:***@``, as SQLAlchemy
    renders it; parsed here so that SQLite commands never import SQLAlchemy)."""
    return _USERINFO.sub(r"\1:***@", uri, count=1)
