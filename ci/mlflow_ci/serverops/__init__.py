"""The tracking server run like a database: database engines, artifact stores, backup, verified
restore, retention, the server profile, configuration files and ``server doctor``."""
