"""decisions.operator_id: the official who operated a decision, by recorded identity (not free text)

Revision ID: 0018
Revises: 0015
"""
import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('decisions') as batch:
        batch.add_column(sa.Column('operator_id', sa.String(length=100), nullable=True))
    with op.batch_alter_table('decision_batch_rows') as batch:
        batch.add_column(sa.Column('operator_id', sa.String(length=100), nullable=True))


def downgrade():
    with op.batch_alter_table('decision_batch_rows') as batch:
        batch.drop_column('operator_id')
    with op.batch_alter_table('decisions') as batch:
        batch.drop_column('operator_id')
