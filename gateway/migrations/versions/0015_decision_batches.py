"""decision batches: a population decided in chunks by the batch job kind, with per-row results

Revision ID: 0015
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0015'
down_revision = '0013'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade():
    op.create_table(
        'decision_batches',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('model_id', sa.String(length=40), nullable=False),
        sa.Column('model_name', sa.String(length=100), nullable=False),
        sa.Column('client_id', sa.String(length=40), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('source', sa.String(length=20), nullable=False),
        sa.Column('total_rows', sa.Integer(), nullable=False),
        sa.Column('next_row', sa.Integer(), nullable=False),
        sa.Column('decided_rows', sa.Integer(), nullable=False),
        sa.Column('replayed_rows', sa.Integer(), nullable=False),
        sa.Column('invalid_rows', sa.Integer(), nullable=False),
        sa.Column('chunk_size', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('claimed_by', sa.String(length=100), nullable=True),
        sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_decision_batches_client_id_api_clients')),
        sa.ForeignKeyConstraint(['model_id'], ['scoring_models.id'],
                                name=op.f('fk_decision_batches_model_id_scoring_models')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_decision_batches')),
    )
    op.create_index(op.f('ix_decision_batches_client_id'), 'decision_batches', ['client_id'], unique=False)
    op.create_index(op.f('ix_decision_batches_status_next_attempt_at'), 'decision_batches',
                    ['status', 'next_attempt_at'], unique=False)
    op.create_table(
        'decision_batch_rows',
        sa.Column('batch_id', sa.String(length=40), nullable=False),
        sa.Column('idx', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('idempotency_key', sa.String(length=255), nullable=False),
        sa.Column('request_hash', sa.String(length=64), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('planned_id', sa.String(length=40), nullable=True),
        sa.Column('subject_ref', sa.String(length=64), nullable=True),
        sa.Column('contact_ciphertext', sa.LargeBinary(), nullable=True),
        sa.Column('monitoring_ciphertext', sa.LargeBinary(), nullable=True),
        sa.Column('data_key', sa.LargeBinary(), nullable=True),
        sa.Column('channels', JSON, nullable=True),
        sa.Column('language', sa.String(length=5), nullable=True),
        sa.Column('features', JSON, nullable=True),
        sa.Column('operator', sa.String(length=200), nullable=True),
        sa.Column('reference', sa.String(length=200), nullable=True),
        sa.Column('errors', JSON, nullable=True),
        sa.Column('decision_id', sa.String(length=40), nullable=True),
        sa.Column('outcome', sa.String(length=64), nullable=True),
        sa.Column('score', sa.Float(), nullable=True),
        sa.Column('adverse', sa.Boolean(), nullable=True),
        sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['batch_id'], ['decision_batches.id'],
                                name=op.f('fk_decision_batch_rows_batch_id_decision_batches')),
        sa.PrimaryKeyConstraint('batch_id', 'idx', name=op.f('pk_decision_batch_rows')),
    )


def downgrade():
    op.drop_table('decision_batch_rows')
    op.drop_index(op.f('ix_decision_batches_status_next_attempt_at'), table_name='decision_batches')
    op.drop_index(op.f('ix_decision_batches_client_id'), table_name='decision_batches')
    op.drop_table('decision_batches')
