"""Files that matter are written atomically: a crash leaves the old file or the new, never half."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


@contextlib.contextmanager
def atomic_writer(path: Path | str, *, durable: bool = True) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` when the block ends without an error (synced to disk
    first unless ``durable=False``, for callers that sync once at the end); on an error the
    temporary file (``.<name>.*.tmp`` beside ``path``) is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path | str, text: str, *, encoding: str = "utf-8") -> Path:
    with atomic_writer(path) as fh:
        fh.write(text.encode(encoding))
    return Path(path)


def atomic_write_json(path: Path | str, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def writable_folder(path: Path | str) -> Path:
    """Create ``path`` (with its parents) when missing and prove that a file can be written in
    it, so that a command refuses an unusable report folder before it does any work."""
    import tempfile

    from mlflow_ci.core.errors import ConfigError

    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mlflow-ci-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"{folder}: the report folder cannot be written ({exc.strerror or exc}); "
            "give a folder this user can create and write in."
        ) from None
    return folder
