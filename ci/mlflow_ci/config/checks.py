"""Sections read by the pull-request checks: ``levels``, ``naming``, ``tags``, ``smoke`` and ``train``."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mlflow_ci.config.base import EnvManager, Section, check_regexes
from mlflow_ci.core.errors import PolicyError

DEFAULT_PLACEHOLDERS: dict[str, str] = {
    "date": r"\d{4}-?\d{2}-?\d{2}",
    "seed": r"\d+",
    "objective": r"[a-z][a-z0-9-]*",
    "model": r"[A-Za-z0-9-]+",
}


Level = Literal["off", "warn", "enforce"]
LEVELS: tuple[str, ...] = get_args(Level)

# The families of conventions a level applies to, in report order. The run's status (FINISHED)
# has no level: a run that did not finish is evidence of nothing.
Family = Literal["naming", "tags", "params", "metrics", "artifacts", "dataset", "model"]
FAMILIES: tuple[str, ...] = get_args(Family)


class Levels(Section):
    """How strictly each family of conventions is checked, so an existing project can adopt them
    step by step: ``enforce`` fails the check (the default), ``warn`` reports what would fail and
    never changes the verdict, ``off`` does not check at all.

    YAML 1.1 (PyYAML) reads an unquoted ``off`` (and ``no``) as false: false means ``off``; true
    (``on``, ``yes``) is refused, since no level is "on".
    """

    naming: Level = Field("enforce", description="Experiment and run names (naming:).")
    tags: Level = Field("enforce", description="Required tags and tag patterns (tags:).")
    params: Level = Field("enforce", description="smoke.required_params.")
    metrics: Level = Field(
        "enforce", description="smoke.required_metrics, and every metric finite (no NaN or infinity)."
    )
    artifacts: Level = Field("enforce", description="smoke.required_artifacts.")
    dataset: Level = Field("enforce", description="A dataset input recorded (smoke.require_dataset).")
    model: Level = Field(
        "enforce",
        description="The model logged with signature and input example; in smoke, it loads and predicts.",
    )

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, value: Any) -> Any:
        if isinstance(value, (str, bool)):
            raise ValueError(
                "a mapping of family to level, e.g. `levels: {naming: warn, tags: off}`; families: "
                + ", ".join(FAMILIES)
            )
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        if value is False:
            return "off"
        if value is True:
            raise ValueError(
                f"one of off, warn, enforce; YAML reads an unquoted on, yes or true as true, which is "
                f"not a level (write `{info.field_name}: enforce`, or quote the word)"
            )
        return value

    def of(self, family: str | None) -> Level:
        """The level of ``family``; conventions outside the families (None) are enforced."""
        return getattr(self, family) if family else "enforce"

    def at(self, level: Level) -> list[str]:
        """The families at ``level``, in report order."""
        return [family for family in FAMILIES if getattr(self, family) == level]


def _not_a_level(section: str, value: Any) -> None:
    """``naming: off`` at the top of the policy: say where levels go instead of "not a mapping"."""
    if value is False or (isinstance(value, str) and value in LEVELS):
        shown = "off" if value is False else value
        raise ValueError(
            f"a mapping of {section} settings; levels are set under levels: "
            f"write `levels: {{{section}: {shown}}}`"
        )


class Naming(Section):
    """Naming conventions. ``{placeholder}`` stands for a pattern; ``{project}`` is the project name."""

    experiment: str = Field("exp_{project}_{date}", description="Template for experiment names.")
    run: str = Field("run_{objective}_{seed}", description="Template for run names.")
    date_format: str = Field("%Y%m%d", description="strftime format used to render {date}.")
    placeholders: dict[str, str] = Field(
        default_factory=dict,
        description="Extra or overriding regular expressions for placeholders.",
    )

    @model_validator(mode="before")
    @classmethod
    def _level_written_here(cls, value: Any) -> Any:
        _not_a_level("naming", value)
        return value

    @field_validator("placeholders")
    @classmethod
    def _regexes_compile(cls, value: dict[str, str]) -> dict[str, str]:
        return check_regexes(value, "placeholder")

    @model_validator(mode="after")
    def _templates_known(self) -> Naming:
        known = {"project", *DEFAULT_PLACEHOLDERS, *self.placeholders}
        for key in ("experiment", "run"):
            for name in re.findall(r"{(\w+)}", getattr(self, key)):
                if name not in known:
                    raise ValueError(
                        f"{key} template uses {{{name}}}, which is not a known placeholder; "
                        f"known: {', '.join(sorted(known))} (add it under naming.placeholders)"
                    )
        return self

    def pattern(self, which: Literal["experiment", "run"], project: str) -> str:
        """The anchored regular expression a name must match."""
        table = {**DEFAULT_PLACEHOLDERS, **self.placeholders, "project": re.escape(project)}
        template = getattr(self, which)
        out, pos = [], 0
        for m in re.finditer(r"{(\w+)}", template):
            out.append(re.escape(template[pos : m.start()]))
            out.append(f"(?:{table[m.group(1)]})")
            pos = m.end()
        out.append(re.escape(template[pos:]))
        return "^" + "".join(out) + "$"

    def render(self, which: Literal["experiment", "run"], project: str, **values: Any) -> str:
        values.setdefault("project", project)
        values.setdefault("date", dt.datetime.now(dt.timezone.utc).strftime(self.date_format))
        try:
            return getattr(self, which).format(**values)
        except KeyError as exc:
            raise PolicyError(
                f"Cannot render the {which} name {getattr(self, which)!r}: no value for {exc}."
            ) from None


class Tags(Section):
    required: list[str] = Field(
        default_factory=lambda: ["dataset", "env", "purpose", "owner"],
        description="Tags every run must carry (non-empty).",
    )
    patterns: dict[str, str] = Field(
        default_factory=dict,
        description="Regular expressions that a tag's value must match, e.g. {env: '^(dev|ci|prod)$'}.",
    )

    @model_validator(mode="before")
    @classmethod
    def _level_written_here(cls, value: Any) -> Any:
        _not_a_level("tags", value)
        return value

    @field_validator("patterns")
    @classmethod
    def _regexes_compile(cls, value: dict[str, str]) -> dict[str, str]:
        return check_regexes(value, "tag")


class Smoke(Section):
    entry_point: str = Field("main", description="MLproject entry point to run.")
    parameters: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Parameters passed to the entry point in smoke mode."
    )
    env_manager: EnvManager = Field(
        "virtualenv", description="How `mlflow run` builds the environment: virtualenv, uv or local."
    )
    predict_env_manager: EnvManager | None = Field(
        None, description="Environment for the load-and-predict check; defaults to env_manager."
    )
    timeout: int = Field(900, gt=0, description="Seconds the entry point may take.")
    experiment: str | None = Field(
        None, description="Experiment to log into; default rendered from naming.experiment."
    )
    required_params: list[str] = Field(default_factory=list)
    required_metrics: list[str] = Field(default_factory=list)
    required_artifacts: list[str] = Field(
        default_factory=list, description="Run artifact paths that must exist (files or folders)."
    )
    model_artifact_path: str = Field(
        "model", description="Name the model is logged under (mlflow.<flavor>.log_model(name=...))."
    )
    require_dataset: bool = Field(True, description="A dataset must be recorded with mlflow.log_input.")
    require_signature: bool = True
    require_input_example: bool = True


class Train(Section):
    """`mlflow-ci train`: run the project with its full parameters (not smoke)."""

    entry_point: str = Field("main", description="MLproject entry point.")
    parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    env_manager: EnvManager = Field("virtualenv")
    timeout: int = Field(3600, gt=0, description="Seconds the run may take.")
    experiment: str | None = Field(None, description="Experiment (default rendered from naming.experiment).")
