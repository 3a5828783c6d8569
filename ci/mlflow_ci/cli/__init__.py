"""The ``mlflow-ci`` command line, the top layer: click options, dispatch to the capability
packages, and the one error handler. Nothing else in the package imports it.

:mod:`~mlflow_ci.cli.app` holds the root group, :func:`main` and the shared options; each command
group's module (imported here for that effect) attaches its commands to the root group.
"""

from mlflow_ci.cli import checks, demo, monitoring, policy, release, server, serving, workflows  # noqa: F401
from mlflow_ci.cli.app import cli, main

__all__ = ["cli", "main"]
