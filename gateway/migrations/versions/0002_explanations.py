"""explanations: the frozen explanation of each decision (or the job that computes it)

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade():
    op.create_table(
        'explanations',
        sa.Column('decision_id', sa.String(length=40), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('method', sa.String(length=60), nullable=True),
        sa.Column('output_space', sa.String(length=20), nullable=True),
        sa.Column('explainer_version', sa.String(length=40), nullable=True),
        sa.Column('shap_version', sa.String(length=40), nullable=True),
        sa.Column('background_sha256', sa.String(length=64), nullable=True),
        sa.Column('random_state', sa.Integer(), nullable=True),
        sa.Column('base_value', sa.Float(), nullable=True),
        sa.Column('output', sa.Float(), nullable=True),
        sa.Column('attributions', JSON, nullable=True),
        sa.Column('selection', JSON, nullable=True),
        sa.Column('additivity_error', sa.Float(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('computed_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_explanations_decision_id_decisions')),
        sa.PrimaryKeyConstraint('decision_id', name=op.f('pk_explanations')),
    )
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_explanations_status_next_attempt_at'), ['status', 'next_attempt_at'], unique=False)


def downgrade():
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_explanations_status_next_attempt_at'))
    op.drop_table('explanations')
