"""Training code of the example MLflow Project; run as ``python -m src.train``."""
