"""Run the toolkit's Alembic migrations (``outboxkit migrate`` and the API).

The scripts keep their own version table, ``outboxkit_alembic_version``, so an
application's ``alembic_version`` is never touched, and carry the branch label
``outboxkit`` so an application can instead merge them into its own history.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from ._engine import create_engine
from ._redact import redact_url
from .config import DEFAULT_TABLE, OutboxConfig
from .errors import ConfigError, StorageError

__all__ = [
    "BRANCH_LABEL",
    "VERSION_TABLE",
    "current_revision",
    "downgrade",
    "head_revision",
    "migration_names",
    "migrations_path",
    "upgrade",
]

VERSION_TABLE = "outboxkit_alembic_version"
APP_VERSION_TABLE = "alembic_version"
BRANCH_LABEL = "outboxkit"
_TABLE_ATTR = "outboxkit_table"
_SCHEMA_ATTR = "outboxkit_schema"


def migrations_path() -> Path:
    """Return the directory of the toolkit's Alembic scripts.

    In an installed wheel they live at ``outbox/_migrations``; in a source
    checkout at the top-level ``migrations/`` directory.
    """
    packaged = Path(str(resources.files("outbox"))) / "_migrations"
    if (packaged / "env.py").is_file():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    msg = "outboxkit's migration scripts are missing from this installation"
    raise ConfigError(msg)


def migration_names(attributes: dict[str, object] | None) -> OutboxConfig:
    """Table names for the migration scripts, from the Alembic config attributes.

    An application running the scripts from its own Alembic environment sets
    ``config.attributes["outboxkit_table"]`` / ``["outboxkit_schema"]`` when it
    uses other names than the defaults.
    """
    attrs = attributes or {}
    table = attrs.get(_TABLE_ATTR, DEFAULT_TABLE)
    schema = attrs.get(_SCHEMA_ATTR)
    return OutboxConfig(table=str(table), schema=None if schema is None else str(schema))


def _alembic_config(url: str, config: OutboxConfig | None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_path()))
    # Alembic's ini interpolation treats % specially (URL-encoded passwords).
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes[_TABLE_ATTR] = (config or OutboxConfig()).table
    cfg.attributes[_SCHEMA_ATTR] = (config or OutboxConfig()).schema
    return cfg


def _check_url(url: str, config: OutboxConfig | None = None) -> None:
    # Builds (and drops) an engine only to refuse a bad URL, or a schema on SQLite, up front.
    create_engine(url, schema=(config or OutboxConfig()).schema, poolclass=NullPool).dispose()


def _adopted_revisions(conn: Connection, schema: str | None) -> list[str]:
    """The toolkit's revisions recorded in the application's ``alembic_version`` (path B)."""
    inspector = inspect(conn)
    if inspector.has_table(VERSION_TABLE, schema=schema) or not inspector.has_table(APP_VERSION_TABLE):
        return []
    recorded = conn.execute(text(f"SELECT version_num FROM {APP_VERSION_TABLE}")).scalars()  # noqa: S608 - a constant
    toolkit = {script.revision for script in ScriptDirectory(str(migrations_path())).walk_revisions()}
    return sorted(rev for rev in recorded if rev in toolkit)


def check_not_adopted(url: str, *, config: OutboxConfig | None = None) -> None:
    """Refuse a database whose own Alembic history carries the toolkit's revisions.

    Such a database (path B of docs/adopting.md) is migrated with the
    application's ``alembic upgrade heads``; ``outboxkit migrate`` would start
    a second history in ``outboxkit_alembic_version`` and fail on the first
    table that already exists.
    """
    _check_url(url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            adopted = _adopted_revisions(conn, (config or OutboxConfig()).schema)
    except DBAPIError as exc:
        raise StorageError(_db_error_text(exc, url)) from None
    finally:
        engine.dispose()
    if adopted:
        msg = (
            f"{redact_url(url)} tracks the toolkit's revisions ({', '.join(adopted)}) in the application's"
            f" {APP_VERSION_TABLE}: run `alembic upgrade heads` (or `alembic current`) with the"
            " application's alembic.ini instead of `outboxkit migrate`"
        )
        raise ConfigError(msg)


def upgrade(url: str, *, revision: str = "heads", config: OutboxConfig | None = None) -> None:
    """Create or upgrade the toolkit's tables at ``url`` (idempotent).

    Raises :class:`ConfigError` on a database that merged the toolkit's
    revisions into its own Alembic history (see :func:`check_not_adopted`).

    .. versionadded:: 0.1
    """
    _check_url(url, config)
    check_not_adopted(url, config=config)
    _run(lambda: command.upgrade(_alembic_config(url, config), revision), url)


def downgrade(url: str, *, revision: str = "base", config: OutboxConfig | None = None) -> None:
    """Downgrade the toolkit's tables; ``base`` removes them and nothing else.

    .. versionadded:: 0.1
    """
    _check_url(url, config)
    check_not_adopted(url, config=config)
    _run(lambda: command.downgrade(_alembic_config(url, config), revision), url)


def upgrade_sql(url: str, *, revision: str = "heads", config: OutboxConfig | None = None) -> str:
    """Return the DDL of an upgrade from nothing to ``revision`` (offline mode).

    .. versionadded:: 0.1
    """
    _check_url(url, config)
    out = io.StringIO()
    with redirect_stdout(out):
        cfg = _alembic_config(url, config)
        cfg.stdout = out
        command.upgrade(cfg, revision, sql=True)
    return out.getvalue()


def head_revision() -> str:
    """The newest revision id of the toolkit's scripts."""
    script = ScriptDirectory(str(migrations_path()))
    head = script.get_current_head()
    assert head is not None  # noqa: S101 - the package ships at least one revision
    return head


def current_revision(url: str, *, config: OutboxConfig | None = None) -> str | None:
    """The toolkit's revision the database at ``url`` is at, or ``None`` before any.

    On a database that merged the toolkit's revisions into its own history
    (path B), the toolkit's revision recorded in its ``alembic_version``.
    """
    _check_url(url)
    engine = create_engine(url, poolclass=NullPool)
    schema = (config or OutboxConfig()).schema
    try:
        with engine.connect() as conn:
            adopted = _adopted_revisions(conn, schema)
            if adopted:
                return adopted[-1]
            if not inspect(conn).has_table(VERSION_TABLE, schema=schema):
                return None
            ctx = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
            )
            return ctx.get_current_revision()
    except DBAPIError as exc:
        raise StorageError(_db_error_text(exc, url)) from None
    finally:
        engine.dispose()


def _run(action: object, url: str) -> None:
    assert callable(action)  # noqa: S101
    try:
        action()
    except DBAPIError as exc:
        raise StorageError(_db_error_text(exc, url)) from None


def _db_error_text(exc: DBAPIError, url: str) -> str:
    # The driver's message can quote the DSN; keep its first line only and
    # scrub the URL's password should it appear.
    first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
    return f"database error at {redact_url(url)}: {first}"
