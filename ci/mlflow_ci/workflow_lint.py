"""``python -m mlflow_ci.workflow_lint``: lint the workflows against this CLI's command tree.

The linting lives in :mod:`mlflow_ci.workflows.lint`, which may not import the CLI (the CLI is
the top layer); this entry point sits above both and hands the click group down.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mlflow_ci.cli import cli
from mlflow_ci.workflows.lint import main as lint_main


def main(argv: Sequence[str] | None = None) -> int:
    return lint_main(argv, cli=cli)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
