"""The policy file, ``mlflow-ci.yaml``: its schema, loading with line numbers, precedence and the
published JSON Schema. Imports only :mod:`mlflow_ci.core`."""
