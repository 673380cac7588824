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

from gateway.contacts import rewrap_legacy_rows

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
    if key:
        rewrap_legacy_rows(op.get_bind(), key)


def downgrade():
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_decisions_purged_at'))
        batch_op.drop_column('hold_set_at')
        batch_op.drop_column('hold_set_by')
        batch_op.drop_column('hold_reason')
        batch_op.drop_column('purged_at')
        batch_op.drop_column('data_key')
