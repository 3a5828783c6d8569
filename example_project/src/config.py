"""Run configuration: ``experiments/run_config.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[1]
RUN_CONFIG_PATH = PROJECT_DIR / "experiments" / "run_config.yaml"

_KEYS = {"tags", "test_size", "smoke_rows"}


class ConfigError(ValueError):
    """The run configuration file is missing or malformed."""


@dataclass(frozen=True)
class RunConfig:
    """What stays the same between runs: team tags, split size and smoke sample size."""

    tags: dict[str, str] = field(default_factory=dict)
    test_size: float = 0.25
    smoke_rows: int = 90


def load_run_config(path: Path = RUN_CONFIG_PATH) -> RunConfig:
    """Read and validate the run configuration; unknown keys are errors, not silently ignored."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: run configuration not found.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}.")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; valid keys: {sorted(_KEYS)}.")

    tags_raw = raw.get("tags") or {}
    if not isinstance(tags_raw, dict):
        raise ConfigError(f"{path}: 'tags' must be a mapping of tag name to value.")
    # A tag without a value is left out rather than logged empty, so a missing owner stays
    # visibly missing to the policy check.
    tags = {str(k): str(v).strip() for k, v in tags_raw.items() if v is not None and str(v).strip()}

    defaults = RunConfig()
    test_size = raw.get("test_size", defaults.test_size)
    if not isinstance(test_size, (int, float)) or isinstance(test_size, bool) or not 0 < test_size < 1:
        raise ConfigError(f"{path}: 'test_size' must be a number between 0 and 1, got {test_size!r}.")
    smoke_rows = raw.get("smoke_rows", defaults.smoke_rows)
    if not isinstance(smoke_rows, int) or isinstance(smoke_rows, bool) or smoke_rows < 1:
        raise ConfigError(f"{path}: 'smoke_rows' must be a positive integer, got {smoke_rows!r}.")
    return RunConfig(tags=tags, test_size=float(test_size), smoke_rows=smoke_rows)
