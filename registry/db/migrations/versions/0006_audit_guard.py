"""audit_log: also refuse REPLACE (SQLite) and TRUNCATE (PostgreSQL).

Revision ID: 0006_audit_guard
Revises: 0005

Migration 0005's triggers refuse UPDATE and DELETE, but two statements rewrite the table
without firing them (issue 19, finding 13):

- SQLite `INSERT OR REPLACE` (and `REPLACE INTO`) with an existing id deletes that row
  as conflict resolution, which fires no DELETE trigger (recursive triggers are off).
  A BEFORE INSERT trigger refuses any insert naming an id that exists; new entries get
  their id from SQLite and never name one. (An upsert's DO UPDATE fires the UPDATE
  trigger, already refused.)
- PostgreSQL `TRUNCATE audit_log` fires no row trigger. A statement-level BEFORE
  TRUNCATE trigger runs 0005's function, which raises.
"""

from alembic import op

revision = "0006_audit_guard"
down_revision = "0005"
branch_labels = None
depends_on = None

MESSAGE = "audit_log is append-only"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log"
            " FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
        )
    else:
        op.execute(
            "CREATE TRIGGER audit_log_no_replace BEFORE INSERT ON audit_log"
            " WHEN NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id)"
            f" BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_no_truncate ON audit_log")
    else:
        op.execute("DROP TRIGGER audit_log_no_replace")
