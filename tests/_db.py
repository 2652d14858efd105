"""Database helpers for the test fixtures: names, URLs and migrating with ``outbox.upgrade``."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pathlib import Path

TEMPLATE_DATABASE: Final = "outboxkit_template"


def unique_database_name() -> str:
    """Return a fresh database name, ``t_<uuid hex>`` (34 characters, under PostgreSQL's 63)."""
    return f"t_{uuid.uuid4().hex}"


def template_database_name(*, shared_server: bool) -> str:
    """Return the template's name; on a server shared by xdist workers, one per worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return f"{TEMPLATE_DATABASE}_{worker}" if shared_server and worker else TEMPLATE_DATABASE


def sqlite_file_url(path: Path) -> str:
    """Return the SQLAlchemy URL of the SQLite file at ``path``."""
    return f"sqlite:///{path}"


def migrate(url: str) -> None:
    """Create the toolkit's tables in ``url`` with ``outbox.upgrade`` (all revisions)."""
    import outbox  # noqa: PLC0415 - imported late so collection does not need the package

    outbox.upgrade(url)
