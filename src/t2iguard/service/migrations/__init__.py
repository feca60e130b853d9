"""Alembic migrations of the gateway's schema."""
