"""sign-in for the console: one-time sign-in links (hashed) and server-side web sessions

Revision ID: 0013
Revises: 0014
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'sign_in_links',
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('client_id', sa.String(length=40), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_sign_in_links_client_id_api_clients')),
        sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_sign_in_links')),
    )
    with op.batch_alter_table('sign_in_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sign_in_links_client_id'), ['client_id'], unique=False)
    op.create_table(
        'web_sessions',
        sa.Column('id_hash', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('via', sa.String(length=20), nullable=False),
        sa.Column('client_id', sa.String(length=40), nullable=True),
        sa.Column('official_id', sa.String(length=100), nullable=True),
        sa.Column('name', sa.String(length=200), nullable=True),
        sa.Column('body', sa.String(length=200), nullable=True),
        sa.Column('role', sa.String(length=20), nullable=True),
        sa.Column('subject_ref', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['client_id'], ['api_clients.id'], name=op.f('fk_web_sessions_client_id_api_clients')),
        sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_web_sessions')),
    )
    with op.batch_alter_table('web_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_sessions_client_id'), ['client_id'], unique=False)


def downgrade():
    with op.batch_alter_table('web_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_web_sessions_client_id'))
    op.drop_table('web_sessions')
    with op.batch_alter_table('sign_in_links', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sign_in_links_client_id'))
    op.drop_table('sign_in_links')
