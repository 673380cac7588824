"""key store: the wrapped data keys move out of the main database into the key store (crypto-shredding);
log leaves can be marked redacted (legacy records holding the person's data in clear, redacted by the purge)

Every wrapped data key in `decisions.data_key` (and in `decision_batch_rows.data_key`, rows of a batch not yet
decided) is copied into the key store's `data_keys` table (gateway.keystore; its own database), read back and
compared byte for byte, and only then are the columns dropped: nothing already recorded is lost. Re-running
after a failure is safe (keys already in the key store are kept and compared).

Revision ID: 0019
Revises: 0018
"""
import datetime as dt

import sqlalchemy as sa
from alembic import op

from gateway import keystore

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

decisions = sa.table('decisions', sa.column('id', sa.String), sa.column('data_key', sa.LargeBinary),
                     sa.column('created_at', sa.DateTime(timezone=True)))
batch_rows = sa.table('decision_batch_rows', sa.column('planned_id', sa.String),
                      sa.column('data_key', sa.LargeBinary))


def _utc(at):
    if isinstance(at, str):  # SQLite without a type to parse it
        at = dt.datetime.fromisoformat(at)
    return at.replace(tzinfo=dt.UTC) if at is not None and at.tzinfo is None else at


def upgrade():
    keystore.create_schema()
    bind = op.get_bind()
    now = dt.datetime.now(dt.UTC)
    found = {row.id: (bytes(row.data_key), _utc(row.created_at) or now) for row in bind.execute(
        sa.select(decisions.c.id, decisions.c.data_key, decisions.c.created_at)
        .where(decisions.c.data_key.is_not(None)))}
    for row in bind.execute(sa.select(batch_rows.c.planned_id, batch_rows.c.data_key)
                            .where(batch_rows.c.data_key.is_not(None), batch_rows.c.planned_id.is_not(None))):
        found.setdefault(row.planned_id, (bytes(row.data_key), now))
    ids = sorted(found)
    present = keystore.wrapped_many(ids)
    missing = [{"decision_id": d, "wrapped": found[d][0], "created_at": found[d][1]} for d in ids if d not in present]
    if missing:
        with keystore.engine().begin() as conn:
            for start in range(0, len(missing), keystore.CHUNK):
                conn.execute(sa.insert(keystore.data_keys), missing[start:start + keystore.CHUNK])
    stored = keystore.wrapped_many(ids)
    different = [d for d in ids if stored.get(d) != found[d][0]]
    if different:
        raise RuntimeError(f"{len(different)} wrapped data key(s) differ between the main database and the key "
                           f"store (first: {different[0]}); nothing was dropped")
    # ALTER TABLE … DROP COLUMN in place (SQLite ≥ 3.35 too): a batch copy of `decisions` would have to drop
    # the table that every decision's other rows reference.
    op.execute('ALTER TABLE decision_batch_rows DROP COLUMN data_key')
    op.execute('ALTER TABLE decisions DROP COLUMN data_key')
    with op.batch_alter_table('log_leaves', schema=None) as batch_op:
        batch_op.add_column(sa.Column('redacted_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('log_leaves', schema=None) as batch_op:
        batch_op.drop_column('redacted_at')
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('data_key', sa.LargeBinary(), nullable=True))
    with op.batch_alter_table('decision_batch_rows', schema=None) as batch_op:
        batch_op.add_column(sa.Column('data_key', sa.LargeBinary(), nullable=True))
    bind = op.get_bind()
    ids = list(bind.execute(sa.select(decisions.c.id)).scalars())
    for decision_id, wrapped in keystore.wrapped_many(ids).items():
        bind.execute(sa.update(decisions).where(decisions.c.id == decision_id).values(data_key=wrapped))
    planned = list(bind.execute(sa.select(batch_rows.c.planned_id).where(batch_rows.c.planned_id.is_not(None),
                                                                           sa.literal_column("status") == "pending"))
                   .scalars())
    for decision_id, wrapped in keystore.wrapped_many(planned).items():
        bind.execute(sa.update(batch_rows).where(batch_rows.c.planned_id == decision_id).values(data_key=wrapped))
