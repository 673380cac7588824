"""access events: who read which decision, explanation, review or access log, and when

Revision ID: 0005
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'access_events',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('decision_id', sa.String(length=40), nullable=False),
        sa.Column('principal_kind', sa.String(length=20), nullable=False),
        sa.Column('principal_id', sa.String(length=100), nullable=False),
        sa.Column('principal_body', sa.String(length=200), nullable=True),
        sa.Column('what', sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_access_events_decision_id_decisions')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_access_events')),
    )
    with op.batch_alter_table('access_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_access_events_decision_id_at'), ['decision_id', 'at'], unique=False)


def downgrade():
    with op.batch_alter_table('access_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_access_events_decision_id_at'))
    op.drop_table('access_events')
