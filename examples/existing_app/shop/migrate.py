"""The application's Alembic configuration, with outboxkit's revisions merged in.

The two lines that adopt the outbox are marked ``# outboxkit``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import outbox

HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    """The shop's Alembic config: its own scripts plus the toolkit's as a branch."""
    config = Config()
    config.set_main_option("script_location", str(HERE / "migrations"))
    versions = [HERE / "migrations" / "versions", outbox.migrations_path() / "versions"]  # outboxkit
    config.set_main_option("version_locations", " ".join(str(v) for v in versions))
    config.set_main_option("path_separator", "space")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "heads") -> None:
    """`alembic upgrade heads`: the shop's tables and the toolkit's."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """`alembic downgrade <revision>`, e.g. ``outboxkit@base`` or ``shop@base``."""
    command.downgrade(alembic_config(url), revision)
