"""Release: gates against the champion, registration, promotion under the lease, rollback and
the audit log."""
