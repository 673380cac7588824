"""audit log tree: leaf indices assigned by the sequencer, complete-subtree nodes, signed checkpoints

Revision ID: 0010
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('log_leaves', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seq', sa.BigInteger(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_log_leaves_seq'), ['seq'])
    op.create_table(
        'log_nodes',
        sa.Column('level', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('idx', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint('level', 'idx', name=op.f('pk_log_nodes')),
    )
    op.create_table(
        'log_checkpoints',
        sa.Column('size', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('root', sa.LargeBinary(length=32), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('size', name=op.f('pk_log_checkpoints')),
    )
    op.create_table(
        'log_sequencer',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('holder', sa.String(length=100), nullable=True),
        sa.Column('held_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_log_sequencer')),
    )
    op.execute("INSERT INTO log_sequencer (id) VALUES (1)")


def downgrade():
    op.drop_table('log_sequencer')
    op.drop_table('log_checkpoints')
    op.drop_table('log_nodes')
    with op.batch_alter_table('log_leaves', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_log_leaves_seq'), type_='unique')
        batch_op.drop_column('seq')
