"""Pull-request checks: run the project in a clean environment (``smoke``), check its runs
against the conventions, load and predict in the model's own environment, ``train``."""
