"""oversight: held decisions (confirmation), review kinds, monitor-only values, ground truth, incidents

Revision ID: 0014
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('confirmation', sa.String(length=30), nullable=True))
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=20), server_default=sa.text("'review'"), nullable=False))
    op.create_table(
        'monitoring_values',
        sa.Column('decision_id', sa.String(length=40), nullable=False),
        sa.Column('model_id', sa.String(length=40), nullable=False),
        sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_monitoring_values_decision_id_decisions')),
        sa.ForeignKeyConstraint(['model_id'], ['scoring_models.id'], name=op.f('fk_monitoring_values_model_id_scoring_models')),
        sa.PrimaryKeyConstraint('decision_id', name=op.f('pk_monitoring_values')),
    )
    op.create_index(op.f('ix_monitoring_values_model_id'), 'monitoring_values', ['model_id'])
    op.create_table(
        'ground_truths',
        sa.Column('decision_id', sa.String(length=40), nullable=False),
        sa.Column('positive', sa.Boolean(), nullable=False),
        sa.Column('posted_by', sa.String(length=40), nullable=False),
        sa.Column('posted_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_ground_truths_decision_id_decisions')),
        sa.PrimaryKeyConstraint('decision_id', name=op.f('pk_ground_truths')),
    )
    op.create_table(
        'incidents',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('model_name', sa.String(length=100), nullable=False),
        sa.Column('model_version', sa.String(length=64), nullable=True),
        sa.Column('severity', sa.String(length=20), nullable=False),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('opened_by', sa.String(length=200), nullable=False),
        sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('report_due_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('reported_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_incidents')),
    )
    op.create_index(op.f('ix_incidents_model_name_opened_at'), 'incidents', ['model_name', 'opened_at'])


def downgrade():
    op.drop_index(op.f('ix_incidents_model_name_opened_at'), table_name='incidents')
    op.drop_table('incidents')
    op.drop_table('ground_truths')
    op.drop_index(op.f('ix_monitoring_values_model_id'), table_name='monitoring_values')
    op.drop_table('monitoring_values')
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.drop_column('kind')
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_column('confirmation')
