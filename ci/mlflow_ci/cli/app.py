"""The root of the ``mlflow-ci`` command line: the root group, :func:`main`, the single error
handler and the options every command group shares. No logic lives here.

Each command is a plain function in its own module taking keyword arguments and returning an
exit code; the click command that parses its flags wraps it in :func:`_handle`, the single error
handler (see :mod:`mlflow_ci.core.errors`). The commands live in one module per group beside this
one (``policy``, ``server``, ``checks``, ``release``, ``serving``, ``workflows``, ``demo``); each
imports this module and attaches its commands to :data:`cli`, and ``mlflow_ci.cli`` imports them
all. This module imports none of them.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mlflow_ci import __version__
from mlflow_ci.core import output, signals
from mlflow_ci.core.errors import EXIT_BUG, EXIT_CODES, EXIT_CONFIG, EXIT_INTERRUPTED, MlflowCiError, Stopped
from mlflow_ci.core.fsutil import writable_folder

F = TypeVar("F", bound=Callable[..., Any])

EPILOG = "Exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()) + "."


def _handle(fn: F) -> F:
    """Run a command function and turn its outcome into an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = fn(*args, **kwargs)
        except MlflowCiError as exc:
            output.error(str(exc), title=type(exc).__name__)
            sys.exit(exc.exit_code)
        except Stopped as exc:
            output.error(f"stopped by {exc.name}; what this command started has been stopped")
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            output.error("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:
            log = Path(tempfile.gettempdir()) / f"mlflow-ci-crash-{os.getpid()}.log"
            log.write_text(
                f"mlflow-ci {__version__}, Python {platform.python_version()}, {platform.platform()}\n"
                + "".join(traceback.format_exception(exc)),
                encoding="utf-8",
            )
            output.error(
                f"mlflow-ci hit an internal error ({type(exc).__name__}: {exc}). This is a bug in mlflow-ci; "
                f"the traceback is in {log}. Please report it with that file."
            )
            sys.exit(EXIT_BUG)
        sys.exit(int(code or 0))

    return wrapper  # type: ignore[return-value]


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
tracking_option = click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="HTTP tracking server to use (default: $MLFLOW_TRACKING_URI, else an embedded local server).",
)
policy_option = click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Policy file (default: <project>/mlflow-ci.yaml).",
)


def writable_report_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """``--report-dir`` is created and proven writable while the flags are parsed, before any work."""
    if value is None:
        return None
    try:
        return writable_folder(value)
    except MlflowCiError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


report_dir_option = click.option(
    "--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None, callback=writable_report_dir,
    help="Where to write the report files (default: reports/mlflow-ci).",
)  # fmt: skip


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlflow-ci")
def cli() -> None:
    """CI/CD and operations for MLflow projects.

    PR checks (smoke, conventions), quality gates, registry promotion with audit and rollback,
    serving images, and tracking-server operations, all configured by one mlflow-ci.yaml.
    """


def _parse_params(items: tuple[str, ...], param_hint: str = "-P/--param") -> dict[str, str]:
    """KEY=VALUE flags (``-P``, ``--alias``) as a dict; a usage error (exit 2) names a bad one."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=param_hint)
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        with signals.stop_on_signals():
            cli.main(args=argv, prog_name="mlflow-ci", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":  # pragma: no cover
    # `python -m mlflow_ci.cli.app`: runpy imported the package first, which attached every command
    # to the imported copy of this module; run that one, not this fresh copy.
    sys.exit(sys.modules["mlflow_ci.cli.app"].main())
