"""The application's Alembic configuration: the shop's ``alembic.ini``, nothing added.

The line that adopts the outbox is ``version_locations`` in ``alembic.ini``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def alembic_config(url: str) -> Config:
    """The shop's ``alembic.ini``, pointed at ``url``."""
    config = Config(str(INI))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "heads") -> None:
    """`alembic upgrade heads`: the shop's tables and the toolkit's."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """`alembic downgrade <revision>`, e.g. ``outboxkit@base`` or ``shop@base``."""
    command.downgrade(alembic_config(url), revision)
