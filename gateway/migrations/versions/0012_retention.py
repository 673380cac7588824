"""retention: per-decision data keys (envelope encryption), purge marks and legal holds

Existing contact ciphertexts (encrypted with CONTACT_KEY directly) are re-encrypted under a data key of
their own, so that the purge can crypto-shred them like new ones. Rows the configured key cannot open are
left as they are (they stay readable by the key that wrote them; the purge erases them).

Revision ID: 0012
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op
from flask import current_app

from gateway.contacts import reencrypt_legacy

revision = '0012'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('data_key', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('purged_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('hold_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('hold_set_by', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('hold_set_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_decisions_purged_at'), ['purged_at'], unique=False)
    _wrap_existing_contacts()


def _wrap_existing_contacts():
    key = current_app.config.get("CONTACT_KEY_BYTES")
    if not key:
        return
    bind = op.get_bind()
    decisions = sa.table('decisions', sa.column('id', sa.String), sa.column('contact_ciphertext', sa.LargeBinary),
                         sa.column('data_key', sa.LargeBinary))
    rows = bind.execute(sa.select(decisions.c.id, decisions.c.contact_ciphertext)
                        .where(decisions.c.contact_ciphertext.is_not(None), decisions.c.data_key.is_(None))).all()
    for decision_id, blob in rows:
        blob = bytes(blob)
        if blob[:1] != b"\x01":
            continue
        try:
            ciphertext, wrapped = reencrypt_legacy(key, decision_id, blob)
        except Exception:  # noqa: BLE001 - written with another key: leave it, the purge erases it
            continue
        bind.execute(sa.update(decisions).where(decisions.c.id == decision_id)
                     .values(contact_ciphertext=ciphertext, data_key=wrapped))


def downgrade():
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_decisions_purged_at'))
        batch_op.drop_column('hold_set_at')
        batch_op.drop_column('hold_set_by')
        batch_op.drop_column('hold_reason')
        batch_op.drop_column('purged_at')
        batch_op.drop_column('data_key')
