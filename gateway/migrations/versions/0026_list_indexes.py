"""indexes in the order of every list: a page and its bounded count read one index range, whatever the table

The review and confirmation queues listed all cases, or the cases of one status, sorted per request (only the open
ones had an index in queue order, 0022); an access log, the incident register, an agency's batches and the model register
needed a sort for their tie-breaking column. Each list's ORDER BY is now an index's order (tests/test_scale_plans.py).

Revision ID: 0026
Revises: 0023
"""
import sqlalchemy as sa
from alembic import op

revision = '0026'
down_revision = '0023'
branch_labels = None
depends_on = None

DUE = sa.text('coalesce(extended_until, due_at)')
# The same value written differently on purpose (gateway.models.LISTED_DUE): only the listing of every case reads
# this index; the claim and the overdue count keep reading the open cases' partial index (0022).
LISTED_DUE = sa.text('coalesce(extended_until, due_at, due_at)')


def upgrade():
    op.create_index('ix_reviews_queue_order', 'reviews', ['kind', LISTED_DUE, 'requested_at', 'id'])
    op.create_index('ix_reviews_status_queue_order', 'reviews', ['kind', 'status', DUE, 'requested_at', 'id'])
    op.create_index('ix_access_events_decision_id_at_id', 'access_events', ['decision_id', 'at', 'id'])
    op.drop_index('ix_access_events_decision_id_at', table_name='access_events')  # the new one's prefix
    op.create_index('ix_incidents_opened_at_id', 'incidents', ['opened_at', 'id'])
    op.create_index('ix_incidents_model_name_opened_at_id', 'incidents', ['model_name', 'opened_at', 'id'])
    op.drop_index('ix_incidents_model_name_opened_at', table_name='incidents')
    op.create_index('ix_decision_batches_model_name_created_at_id', 'decision_batches',
                    ['model_name', 'created_at', 'id'])
    op.create_index('ix_scoring_models_status_name_registered_at', 'scoring_models', ['status', 'name', 'registered_at'])
    op.drop_index('ix_scoring_models_name_status', table_name='scoring_models')


def downgrade():
    op.create_index('ix_scoring_models_name_status', 'scoring_models', ['name', 'status'])
    op.drop_index('ix_scoring_models_status_name_registered_at', table_name='scoring_models')
    op.drop_index('ix_decision_batches_model_name_created_at_id', table_name='decision_batches')
    op.create_index('ix_incidents_model_name_opened_at', 'incidents', ['model_name', 'opened_at'])
    op.drop_index('ix_incidents_model_name_opened_at_id', table_name='incidents')
    op.drop_index('ix_incidents_opened_at_id', table_name='incidents')
    op.create_index('ix_access_events_decision_id_at', 'access_events', ['decision_id', 'at'])
    op.drop_index('ix_access_events_decision_id_at_id', table_name='access_events')
    op.drop_index('ix_reviews_status_queue_order', table_name='reviews')
    op.drop_index('ix_reviews_queue_order', table_name='reviews')
