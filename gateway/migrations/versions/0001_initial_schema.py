"""initial schema: models, decisions, outbox, audit log, idempotency, api clients

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 06:13:28.243736

"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    
    op.create_table('api_clients',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('body', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('key_prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_clients')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_clients_key_hash')),
    sa.UniqueConstraint('name', name=op.f('uq_api_clients_name'))
    )
    op.create_table('blobs',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_blobs'))
    )
    op.create_table('log_leaves',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=60), nullable=False),
    sa.Column('object_id', sa.String(length=40), nullable=False),
    sa.Column('leaf_hash', sa.String(length=64), nullable=False),
    sa.Column('record', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_log_leaves'))
    )
    with op.batch_alter_table('log_leaves', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_log_leaves_object_id'), ['object_id'], unique=False)

    op.create_table('idempotency_keys',
    sa.Column('client_id', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('resource_id', sa.String(length=40), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response_body', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_idempotency_keys_client_id_api_clients')),
    sa.PrimaryKeyConstraint('client_id', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_table('scoring_models',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('adapter', sa.String(length=32), nullable=False),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=False),
    sa.Column('background_sha256', sa.String(length=64), nullable=True),
    sa.Column('risk_class', sa.String(length=10), nullable=False),
    sa.Column('manifest', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('registered_by', sa.String(length=200), nullable=False),
    sa.Column('status_changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['artifact_sha256'], ['blobs.sha256'], name=op.f('fk_scoring_models_artifact_sha256_blobs')),
    sa.ForeignKeyConstraint(['background_sha256'], ['blobs.sha256'], name=op.f('fk_scoring_models_background_sha256_blobs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scoring_models')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_scoring_models_name_version'))
    )
    with op.batch_alter_table('scoring_models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scoring_models_name_status'), ['name', 'status'], unique=False)

    op.create_table('decisions',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('model_id', sa.String(length=40), nullable=False),
    sa.Column('model_name', sa.String(length=100), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=40), nullable=False),
    sa.Column('subject_ref', sa.String(length=64), nullable=False),
    sa.Column('contact_ciphertext', sa.LargeBinary(), nullable=True),
    sa.Column('language', sa.String(length=5), nullable=False),
    sa.Column('inputs', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('outcome', sa.String(length=64), nullable=False),
    sa.Column('adverse', sa.Boolean(), nullable=False),
    sa.Column('role_of_ai', sa.String(length=20), nullable=False),
    sa.Column('operator', sa.String(length=200), nullable=True),
    sa.Column('reference', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('effective_outcome', sa.String(length=64), nullable=False),
    sa.Column('effective_review_id', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_decisions_client_id_api_clients')),
    sa.ForeignKeyConstraint(['model_id'], ['scoring_models.id'], name=op.f('fk_decisions_model_id_scoring_models')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_decisions'))
    )
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_decisions_client_id'), ['client_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_decisions_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_decisions_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_decisions_subject_ref'), ['subject_ref'], unique=False)

    op.create_table('notifications',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('decision_id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('language', sa.String(length=5), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_notifications_decision_id_decisions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications'))
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notifications_decision_id'), ['decision_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_notifications_status_next_attempt_at'), ['status', 'next_attempt_at'], unique=False)

    


def downgrade():
    
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notifications_status_next_attempt_at'))
        batch_op.drop_index(batch_op.f('ix_notifications_decision_id'))

    op.drop_table('notifications')
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_decisions_subject_ref'))
        batch_op.drop_index(batch_op.f('ix_decisions_model_id'))
        batch_op.drop_index(batch_op.f('ix_decisions_created_at'))
        batch_op.drop_index(batch_op.f('ix_decisions_client_id'))

    op.drop_table('decisions')
    with op.batch_alter_table('scoring_models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scoring_models_name_status'))

    op.drop_table('scoring_models')
    op.drop_table('idempotency_keys')
    with op.batch_alter_table('log_leaves', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_log_leaves_object_id'))

    op.drop_table('log_leaves')
    op.drop_table('blobs')
    op.drop_table('api_clients')
    
