"""The one engine factory: driver choice, SQLite settings, bad URLs (issue #10)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

import outbox
from outbox import ConfigError, create_async_engine, create_engine


def _pragmas(conn: object) -> tuple[int, str, int]:
    run = conn.execute  # type: ignore[attr-defined]
    return (
        run(text("PRAGMA busy_timeout")).scalar_one(),
        run(text("PRAGMA journal_mode")).scalar_one(),
        run(text("PRAGMA foreign_keys")).scalar_one(),
    )


def test_sqlite_engine_waits_for_locks_in_wal_mode(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        with engine.connect() as conn:
            assert _pragmas(conn) == (30_000, "wal", 0)
    finally:
        engine.dispose()
    assert outbox.SQLITE_BUSY_TIMEOUT.total_seconds() == 30


def test_async_twin_has_the_same_sqlite_settings(tmp_path: Path) -> None:
    async def read() -> tuple[int, str, int]:
        engine = create_async_engine(f"sqlite:///{tmp_path / 'app.db'}")
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(_pragmas)
        finally:
            await engine.dispose()

    assert engine_driver(create_async_engine("sqlite://")) == "aiosqlite"
    assert asyncio.run(read()) == (30_000, "wal", 0)


def engine_driver(engine: object) -> str:
    return engine.url.drivername.partition("+")[2]  # type: ignore[attr-defined]


def test_postgresql_urls_get_psycopg_3_for_both_twins() -> None:
    sync = create_engine("postgresql://app:pw@127.0.0.1:1/db")
    async_ = create_async_engine("postgresql://app:pw@127.0.0.1:1/db")
    assert sync.url.drivername == async_.url.drivername == "postgresql+psycopg"
    assert sync.dialect.is_async is False
    assert async_.dialect.is_async is True


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nosuchdriver://u:Pw-sentinel-1@h/db", "invalid database URL nosuchdriver://u:***@h/db"),
        ("postgres://u:Pw-sentinel-1@h/db", "use postgresql+psycopg://"),
        ("not a url", "invalid database URL"),
    ],
)
def test_a_url_sqlalchemy_cannot_use_is_one_config_error_without_the_password(
    url: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match="invalid database URL") as caught:
        create_engine(url)
    assert expected in str(caught.value)
    assert "Pw-sentinel-1" not in str(caught.value)
    with pytest.raises(ConfigError):
        create_async_engine(url)


def test_a_schema_on_sqlite_is_refused() -> None:
    with pytest.raises(ConfigError, match="SQLite"):
        create_engine("sqlite://", schema="messaging")


def test_engine_options_reach_sqlalchemy(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}", pool_size=7)
    assert engine.pool.size() == 7  # type: ignore[attr-defined]
    engine.dispose()
