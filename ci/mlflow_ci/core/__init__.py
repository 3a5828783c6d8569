"""The bottom layer: errors and exit codes, output and reports, files, subprocesses, threads,
faults for tests, the small HTTP client. Imports nothing else of mlflow-ci."""
