"""mlflow-ci: CI/CD and operations for MLflow projects."""

__version__ = "0.1.0"
