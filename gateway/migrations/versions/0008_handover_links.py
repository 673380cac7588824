"""handover links: revocable links to a person's decision that an agency hands on, recorded as such

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'handover_links',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('decision_id', sa.String(length=40), nullable=False),
        sa.Column('created_by', sa.String(length=40), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_by', sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_handover_links_decision_id_decisions')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_handover_links')),
    )
    with op.batch_alter_table('handover_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_handover_links_decision_id'), ['decision_id'], unique=False)


def downgrade():
    with op.batch_alter_table('handover_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_handover_links_decision_id'))
    op.drop_table('handover_links')
