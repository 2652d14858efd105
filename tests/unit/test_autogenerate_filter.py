"""`outbox.autogenerate_filter`: which objects an application's autogenerate leaves to the toolkit."""

from __future__ import annotations

import sqlalchemy as sa

import outbox


def _table(name: str, schema: str | None = None) -> sa.Table:
    return sa.Table(name, sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), schema=schema)


def test_autogenerate_filter_hides_toolkit_tables_and_their_parts() -> None:
    """Toolkit tables, their columns and indexes are skipped; the application's are kept (#9)."""
    hook = outbox.autogenerate_filter()
    for name in ("outbox", "outbox_dead_letter", "outboxkit_saga", "outboxkit_alembic_version"):
        table = _table(name)
        assert not hook(table, name, "table", True, None)
        assert not hook(table.c.id, "id", "column", True, None)
        assert not hook(sa.Index(f"ix_{name}", table.c.id), f"ix_{name}", "index", True, None)
    orders = _table("orders")
    assert hook(orders, "orders", "table", True, None)
    assert hook(_table("outbox", schema="app"), "outbox", "table", True, None)


def test_autogenerate_filter_follows_configured_names_and_chains() -> None:
    """Configured outbox names are the toolkit's; other objects go to the application's own hook (#9)."""
    seen: list[str | None] = []

    def app_hook(
        obj: object, name: str | None, type_: str, reflected: bool, compare_to: object | None
    ) -> bool:
        seen.append(name)
        return name != "legacy"

    hook = outbox.autogenerate_filter(
        outbox.OutboxConfig(table="events", schema="msg"), include_object=app_hook
    )
    assert not hook(_table("events", "msg"), "events", "table", False, None)
    assert not hook(_table("events_dead_letter", "msg"), "events_dead_letter", "table", False, None)
    assert hook(_table("outbox"), "outbox", "table", False, None)
    assert not hook(_table("legacy"), "legacy", "table", False, None)
    assert seen == ["outbox", "legacy"]


def test_every_table_a_package_owns_is_hidden_from_autogenerate() -> None:
    """The name-based filter and the packages' own metadata agree on what the toolkit's tables are (#10)."""
    from tests._tables import TOOLKIT_METADATA  # noqa: PLC0415 - imports every package

    hook = outbox.autogenerate_filter()
    tables = [t for metadata in TOOLKIT_METADATA for t in metadata.sorted_tables]
    assert len(tables) == 17  # 16 + outboxkit_consumer_offset (Kafka offsets, revision 0006)
    assert [t.name for t in tables if hook(t, t.name, "table", False, None)] == []


def test_importing_outbox_registers_no_other_packages_tables() -> None:
    """outbox.metadata is the write side's two tables, whatever else a process imported."""
    import inbox.tables  # noqa: F401, PLC0415
    import saga.tables  # noqa: F401, PLC0415

    assert sorted(outbox.metadata.tables) == ["outbox", "outbox_dead_letter"]
