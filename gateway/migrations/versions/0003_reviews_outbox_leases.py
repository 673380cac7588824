"""reviews; outbox leases and context; disabled webhook endpoints

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
OPEN = sa.text("status IN ('queued', 'claimed')")


def upgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('context', JSON, nullable=True))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True))

    op.create_table(
        'webhook_endpoints',
        sa.Column('url_sha256', sa.String(length=64), nullable=False),
        sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('url_sha256', name=op.f('pk_webhook_endpoints')),
    )

    op.create_table(
        'reviews',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('decision_id', sa.String(length=40), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('point_of_view', sa.Text(), nullable=False),
        sa.Column('contest_grounds', JSON, nullable=False),
        sa.Column('corrected_data', JSON, nullable=True),
        sa.Column('language', sa.String(length=5), nullable=False),
        sa.Column('requested_by', sa.String(length=100), nullable=False),
        sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('extended_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('extension_reason', sa.Text(), nullable=True),
        sa.Column('extended_by', sa.String(length=100), nullable=True),
        sa.Column('extended_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('claimed_by', sa.String(length=100), nullable=True),
        sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('fencing_token', sa.Integer(), nullable=False),
        sa.Column('outcome', sa.String(length=20), nullable=True),
        sa.Column('new_outcome', sa.String(length=64), nullable=True),
        sa.Column('reasons', JSON, nullable=True),
        sa.Column('point_of_view_considered', sa.Boolean(), nullable=True),
        sa.Column('resolved_by', sa.String(length=100), nullable=True),
        sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('rescore_decision_id', sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(['decision_id'], ['decisions.id'], name=op.f('fk_reviews_decision_id_decisions')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_reviews')),
    )
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reviews_decision_id'), ['decision_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_reviews_status_due_at'), ['status', 'due_at'], unique=False)
        batch_op.create_index('uq_reviews_open_decision', ['decision_id'], unique=True,
                              sqlite_where=OPEN, postgresql_where=OPEN)


def downgrade():
    with op.batch_alter_table('reviews', schema=None) as batch_op:
        batch_op.drop_index('uq_reviews_open_decision')
        batch_op.drop_index(batch_op.f('ix_reviews_status_due_at'))
        batch_op.drop_index(batch_op.f('ix_reviews_decision_id'))
    op.drop_table('reviews')
    op.drop_table('webhook_endpoints')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('claimed_by')
        batch_op.drop_column('context')
