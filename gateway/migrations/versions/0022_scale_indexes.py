"""indexes for a record of 10^6 decisions: a person's decisions in page order, the review queue in claim order

A person's page of decisions was the whole of their decisions sorted per request, and a claim sorted every
review ever requested by effective due date; these indexes give both in order (bench/record_scale.py).

Revision ID: 0022
Revises: 0019
"""
import sqlalchemy as sa
from alembic import op

revision = '0022'
down_revision = '0019'
branch_labels = None
depends_on = None

OPEN_REVIEW_SQL = "status IN ('queued', 'claimed')"


def upgrade():
    op.create_index('ix_decisions_subject_ref_created_at_id', 'decisions', ['subject_ref', 'created_at', 'id'])
    op.drop_index('ix_decisions_subject_ref', table_name='decisions')  # the new index's prefix serves its lookups
    op.create_index('ix_reviews_claim_order', 'reviews',
                    ['kind', sa.text('coalesce(extended_until, due_at)'), 'requested_at', 'id'],
                    sqlite_where=sa.text(OPEN_REVIEW_SQL), postgresql_where=sa.text(OPEN_REVIEW_SQL))


def downgrade():
    op.drop_index('ix_reviews_claim_order', table_name='reviews')
    op.create_index('ix_decisions_subject_ref', 'decisions', ['subject_ref'])
    op.drop_index('ix_decisions_subject_ref_created_at_id', table_name='decisions')
