"""The database: SQLAlchemy models (images, channels, tokens, the audit trail), the Alembic
migrations run at every start, and the writer locks (a file lock on SQLite, advisory locks
on PostgreSQL). Imports only registry.errors and sysext.core.
"""
