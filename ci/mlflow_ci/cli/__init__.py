"""The ``mlflow-ci`` command line, the top layer: click options, dispatch to the capability
packages, and the one error handler. Nothing else in the package imports it."""

from mlflow_ci.cli.app import cli, main

__all__ = ["cli", "main"]
