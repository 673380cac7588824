"""recourse: the frozen options an adverse decision comes with (personal data: purge with the decision)

Revision ID: 0011
Revises: 0012 (re-chained after merging main's retention migration)
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0011'
down_revision = '0012'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade():
    op.create_table(
        'recourse',
        sa.Column('decision_id', sa.String(length=40), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('method', sa.String(length=60), nullable=True),
        sa.Column('options', JSON, nullable=True),
        sa.Column('reason', sa.String(length=40), nullable=True),
        sa.Column('parameters', JSON, nullable=True),
        sa.Column('digest', sa.String(length=64), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('computed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('claimed_by', sa.String(length=100), nullable=True),
        sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_recourse_decision_id_decisions')),
        sa.PrimaryKeyConstraint('decision_id', name=op.f('pk_recourse')),
    )
    with op.batch_alter_table('recourse', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recourse_status_next_attempt_at'), ['status', 'next_attempt_at'], unique=False)


def downgrade():
    with op.batch_alter_table('recourse', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recourse_status_next_attempt_at'))
    op.drop_table('recourse')
