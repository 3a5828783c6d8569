"""MLflow access: the tracking-server fixture, registry connections, model references,
lineage and reproducibility tags, env managers. Every capability reaches MLflow through here."""
