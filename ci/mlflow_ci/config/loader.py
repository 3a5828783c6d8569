"""The policy file ``mlflow-ci.yaml``: schema, loading with line numbers, and resolution.

One file per ML project configures everything.  It is parsed into frozen pydantic models
(unknown keys rejected, the nearest valid key suggested) and every error names the file, the
line, the key path, the bad value and what was expected.

Precedence, lowest first, implemented once in :func:`load_policy`:

1. defaults written in the models below;
2. the policy file;
3. environment variables ``MLFLOW_CI__<SECTION>__<KEY>`` (e.g. ``MLFLOW_CI__SMOKE__ENV_MANAGER=uv``),
   values parsed as YAML scalars;
4. CLI flags, passed in as dotted overrides (``{"smoke.env_manager": "local"}``).

:class:`LoadedPolicy` remembers where each value came from (``sources``).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mlflow_ci.config.base import ENV_PREFIX, POLICY_FILENAME
from mlflow_ci.config.policy import Policy
from mlflow_ci.core.errors import PolicyError


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    path: Path | None
    sources: Mapping[str, str] = field(default_factory=dict)

    def source_of(self, dotted: str) -> str:
        """Where a value came from: ``default``, ``<file>:<line>``, ``env VAR`` or ``flag``."""
        if dotted in self.sources:
            return self.sources[dotted]
        # A whole mapping given by an override supplies its children too; a section written in
        # the file does not supply the keys it leaves out (those keep their defaults).
        parts = dotted.split(".")
        for i in range(len(parts) - 1, 0, -1):
            origin = self.sources.get(".".join(parts[:i]))
            if origin and origin.startswith(("env ", "flag")):
                return origin
        return "default"


def find_policy(project_dir: Path | str) -> Path | None:
    candidate = Path(project_dir) / POLICY_FILENAME
    return candidate if candidate.is_file() else None


# A policy is a few hundred lines; anything far larger is a mistake or an attack, refused before
# it is read. YAML aliases let a few lines stand for billions of nodes ("billion laughs"): the
# document is measured as if every alias were expanded, and refused past the bound, before any
# of it is walked or validated.
MAX_POLICY_BYTES = 1 << 20
MAX_EXPANDED_NODES = 20_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _PolicyLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key written twice in one mapping (YAML says keys are
    unique; PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _DuplicateKey(key, first=seen[key], again=line)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, *, first: int, again: int) -> None:
        super().__init__(key)
        self.key, self.first, self.again = key, first, again


def read_policy_text(path: Path) -> str:
    """The file's text, refused (with the reason and where) when it is too large or not UTF-8."""
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_POLICY_BYTES:
                raise PolicyError(
                    f"{path}:1: the policy file is {size:,} bytes; a policy may be at most "
                    f"{MAX_POLICY_BYTES:,} bytes. Is this the right file?"
                )
            raw = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"{path}: the policy file cannot be read ({exc.strerror or exc}).") from None
    if len(raw) > MAX_POLICY_BYTES:  # grew while read, or a special file that reports no size
        raise PolicyError(
            f"{path}:1: the policy file is over {MAX_POLICY_BYTES:,} bytes; is this the right file?"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PolicyError(
            f"{path}:{line}: the policy file is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}). "
            "Save it as UTF-8."
        ) from None


def _first_too_large(root: yaml.Node, path: Path | str) -> yaml.Node | None:
    """The innermost node that, with every alias expanded, holds more than
    :data:`MAX_EXPANDED_NODES` nodes (measured without expanding anything), or None; a
    recursive alias (a node that contains itself) is refused."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    too_large: list[yaml.Node] = []

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise PolicyError(
                f"{path}:{node.start_mark.line + 1}: a YAML alias refers to a node that contains it "
                "(a recursive alias); write the values out."
            )
        on_path.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        on_path.discard(key)
        if total > MAX_EXPANDED_NODES and not too_large:
            too_large.append(node)
        sizes[key] = min(total, MAX_EXPANDED_NODES + 1)
        return sizes[key]

    size(root)
    return too_large[0] if too_large else None


def _compose(text: str, path: Path | str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Parse YAML once and record the 1-based line of every key path.

    Refused, each with the file and line: invalid YAML, a key written twice in one mapping,
    aliases that expand past :data:`MAX_EXPANDED_NODES` nodes, a recursive alias.
    """
    loader = None
    try:
        loader = _PolicyLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, {}
        bomb = _first_too_large(node, path)
        if bomb is not None:
            raise PolicyError(
                f"{path}:{bomb.start_mark.line + 1}: the policy's YAML aliases expand to more than "
                f"{MAX_EXPANDED_NODES:,} values; a policy needs far fewer. Write the values out "
                "instead of nesting aliases."
            )
        data = loader.construct_document(node)
    except _DuplicateKey as dup:
        raise PolicyError(
            f"{path}:{dup.again}: key {dup.key!r} is written twice in the same mapping (first at line "
            f"{dup.first}); YAML keys must be unique. Keep one."
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"{mark.line + 1}" if mark else "?"
        raise PolicyError(
            f"{path}:{line}: not valid YAML: {exc.problem or exc}"
            + (f" ({exc.context})" if exc.context else "")
            + ". Fix the syntax (indentation, quotes, a missing colon) and try again."
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        raise PolicyError(
            f"{path}:{line}: not valid YAML: the control character U+{code:04X} is not allowed in a YAML file."
        ) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}.") from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[tuple[str, ...], int] = {}

    def walk(n: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = (*prefix, str(k.value))
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                key = (*prefix, str(i))
                lines[key] = v.start_mark.line + 1
                walk(v, key)

    walk(node, ())
    return data, lines


def _allowed_keys(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    """The field names valid at ``loc`` (used to suggest the nearest key)."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        current = _model_in(annotation)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _format_errors(
    exc: ValidationError, path: Path | str, lines: dict[tuple[str, ...], int], origins: dict[str, str]
) -> str:
    problems = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        dotted = ".".join(loc) or "(top level)"
        where = None
        origin = origins.get(dotted)
        if origin:
            where = origin
        else:
            for i in range(len(loc), -1, -1):
                if loc[:i] in lines:
                    where = f"{path}:{lines[loc[:i]]}"
                    break
        where = where or f"{path}"
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(Policy, loc[:-1])
            close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.6)
            expected = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                f"{where}: unknown key {dotted!r}; {expected}valid keys here: {', '.join(allowed) or '(none)'}."
            )
        elif kind == "missing":
            problems.append(f"{where}: required key {dotted!r} is missing.")
        else:
            value = err.get("input")
            shown = json.dumps(value, default=str) if not isinstance(value, dict) else "a mapping"
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            problems.append(f"{where}: key {dotted!r} has value {shown}; expected: {msg}.")
    return "\n".join(problems)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = data
    for part in parts[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[part] = nxt
        cur = nxt
    cur[parts[-1]] = value


def env_overrides(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """``MLFLOW_CI__SMOKE__ENV_MANAGER=uv`` → ``{"smoke.env_manager": ("uv", "env MLFLOW_CI__...")}``."""
    out: dict[str, tuple[Any, str]] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or not raw:
            continue
        dotted = ".".join(p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p)
        try:
            value, _ = _compose(raw, f"${name}")
        except PolicyError:
            value = raw
        out[dotted] = (value, f"env {name}")
    return out


def load_policy(
    path: Path | str | None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    project_default: str | None = None,
) -> LoadedPolicy:
    """Load, override and validate a policy. ``path=None`` means defaults only (then
    ``project_default`` supplies the project name)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    shown_path: Path | str = "(defaults)"
    if path is not None:
        path = Path(path)
        shown_path = path
        if path.is_dir():
            raise PolicyError(f"{path}: is a folder; give the policy file ({POLICY_FILENAME}) itself.")
        if not path.is_file():
            raise PolicyError(
                f"{path}: policy file not found.",
                hint=f"Create {POLICY_FILENAME} in the project (see the README's policy reference).",
            )
        raw, lines = _compose(read_policy_text(path), path)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise PolicyError(
                f"{path}:1: the policy must be a mapping of keys (project:, smoke:, ...), not {type(raw).__name__}."
            )
        data = raw
    if "project" not in data and project_default:
        data["project"] = project_default
    origins: dict[str, str] = {}
    sources: dict[str, str] = {".".join(k): f"{shown_path}:{v}" for k, v in lines.items()}
    for dotted, (value, origin) in env_overrides(env).items():
        _set_dotted(data, dotted, value)
        origins[dotted] = origin
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        _set_dotted(data, dotted, value)
        origins[dotted] = f"flag ({dotted})"
    sources.update(origins)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(
            f"{shown_path} is not a valid mlflow-ci policy:\n{_format_errors(exc, shown_path, lines, origins)}"
        ) from None
    return LoadedPolicy(policy=policy, path=path if isinstance(path, Path) else None, sources=sources)


def load_command_policy(
    policy_path: Path | None,
    *,
    overrides: Mapping[str, Any] | None = None,
    project_default: str = "mlflow-ci",
) -> LoadedPolicy:
    """The policy for a registry command: ``--policy``, else ``./mlflow-ci.yaml``, else defaults."""
    if policy_path is None and Path(POLICY_FILENAME).is_file():
        policy_path = Path(POLICY_FILENAME)
    return load_policy(policy_path, overrides=overrides, project_default=project_default)


def json_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://mlflow-ci.dev/schema/mlflow-ci.schema.json"
    schema["title"] = "mlflow-ci policy (mlflow-ci.yaml)"
    return schema
