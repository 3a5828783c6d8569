"""Serving: the container engine, serving images, ``serve-check`` and its load test, deploy
targets and ``deploy``. Its one arrow into another capability: the audited rollback of
:mod:`mlflow_ci.release` after a failed post-deploy check."""
