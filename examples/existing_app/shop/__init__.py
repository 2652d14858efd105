"""A tiny shop that adopts the outbox through its own Alembic history."""
