"""metric rollups: /metrics counts finished events once, by the time they finished, instead of every row per refresh

Final-state rows get the time they were finished (notifications delivered or dead, reviews resolved or withdrawn,
explanation and recourse jobs done or failed); the rollup tables keep the counts of closed hours; a model's
decisions are read by time through a new index (the window sample and the purge backlog). Rows already final
are stamped from the times they carry, so the first refresh counts them once. Partial indexes hold the rows still
waiting (notices to send or dead, explanation and recourse jobs pending): /metrics reads those, not the history.

Revision ID: 0023
Revises: 0022
"""
import sqlalchemy as sa
from alembic import op

revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None

STAMPED = (
    ('notifications', "status IN ('delivered', 'dead')", 'coalesce(delivered_at, next_attempt_at, created_at)'),
    ('reviews', "status IN ('resolved', 'withdrawn')", 'coalesce(resolved_at, extended_at, requested_at)'),
    ('explanations', "status <> 'pending' AND attempts > 0", 'coalesce(computed_at, created_at)'),
    ('recourse', "status <> 'pending' AND attempts > 0", 'coalesce(computed_at, created_at)'),
)

# The rows still waiting (and dead notices), read by /metrics without the finished history (partial indexes).
WAITING = (
    ('notifications', "status IN ('pending', 'retrying', 'dead')"),
    ('explanations', "status = 'pending'"),
    ('recourse', "status = 'pending'"),
)
FINISHED = "finished_at IS NOT NULL"  # most explanation and recourse rows never were jobs
CLAIMED = "status = 'claimed'"  # the review cases under a lease, counted by /metrics


def upgrade():
    for name, final, at in STAMPED:
        op.add_column(name, sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True))
        op.execute(f"UPDATE {name} SET finished_at = {at} WHERE {final}")
        op.create_index(f'ix_{name}_finished_at', name, ['finished_at'], sqlite_where=sa.text(FINISHED),
                        postgresql_where=sa.text(FINISHED))
    for name, condition in WAITING:
        op.create_index(f'ix_{name}_waiting', name, ['status'],
                        sqlite_where=sa.text(condition), postgresql_where=sa.text(condition))
    op.create_index(op.f('ix_reviews_requested_at'), 'reviews', ['requested_at'])
    op.create_index('ix_reviews_claimed', 'reviews', ['kind'], sqlite_where=sa.text(CLAIMED),
                    postgresql_where=sa.text(CLAIMED))
    op.create_index(op.f('ix_decisions_model_name_created_at'), 'decisions', ['model_name', 'created_at'])
    op.create_table(
        'metric_rollups',
        sa.Column('stream', sa.String(length=40), nullable=False),
        sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
        sa.Column('model_name', sa.String(length=100), nullable=False),
        sa.Column('key', sa.String(length=40), nullable=False),
        sa.Column('value', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('stream', 'period_start', 'model_name', 'key', name=op.f('pk_metric_rollups')),
    )
    op.create_table(
        'metric_watermarks',
        sa.Column('stream', sa.String(length=40), nullable=False),
        sa.Column('covered_from', sa.DateTime(timezone=True), nullable=False),
        sa.Column('closed_until', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('stream', name=op.f('pk_metric_watermarks')),
    )


def downgrade():
    op.drop_table('metric_watermarks')
    op.drop_table('metric_rollups')
    op.drop_index(op.f('ix_decisions_model_name_created_at'), table_name='decisions')
    op.drop_index('ix_reviews_claimed', table_name='reviews')
    op.drop_index(op.f('ix_reviews_requested_at'), table_name='reviews')
    for name, _condition in reversed(WAITING):
        op.drop_index(f'ix_{name}_waiting', table_name=name)
    for name, _final, _at in reversed(STAMPED):
        op.drop_index(f'ix_{name}_finished_at', table_name=name)
        # A plain ALTER on both backends (SQLite >= 3.35): a batch copy of `reviews` would reflect its
        # expression index (ix_reviews_claim_order), which SQLAlchemy cannot.
        op.execute(f"ALTER TABLE {name} DROP COLUMN finished_at")
