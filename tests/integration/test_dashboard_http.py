"""The dashboard over HTTP (issue 14): every page and action against the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

import inbox
import saga
from outbox import ConfigError, Envelope, SchemaMissingError, outbox_tables
from outboxkit.dashboard import DashboardConfig, create_app
from tests._dashboard import HOSTILE, TOKEN, Seeded, counts, csrf_of, seed
from tests._inbox import count_effects, domain, entry, record_effect
from tests._saga import TIMERS
from tests._servers import free_port
from tests.e2e.test_security import doc_block

BASE = "http://testserver"

# The consumer whose dead letter the dashboard retries (the handlers of `--handlers`).
registry = inbox.Registry()


@registry.handler("orders.created")
def _on_order(message: Envelope, session: Session) -> None:
    record_effect(message, session)


@pytest.fixture
def seeded(db_url: str) -> Seeded:
    return seed(db_url)


@pytest.fixture
def client(db_url: str, seeded: Seeded) -> Iterator[TestClient]:
    app = create_app(DashboardConfig(db_url=db_url, token=TOKEN, timer_topic=TIMERS, refresh_s=7))
    with TestClient(app, base_url=BASE, follow_redirects=False) as c:
        yield c


def login(client: TestClient, name: str = "alice") -> str:
    """Log in; return the session's CSRF token."""
    response = client.post(
        "/login", data={"token": TOKEN, "name": name, "next": "/sagas"}, headers={"Origin": BASE}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/sagas"
    return csrf_of(client.get("/").text)


def test_dashboard_overview_shows_backlog_dead_letters_and_sagas(client: TestClient, seeded: Seeded) -> None:
    """The overview counts rows waiting, dead letters per topic and group, sagas by state, and reloads itself."""
    page = client.get("/")
    assert page.status_code == 200
    text = page.text
    assert '<meta http-equiv="refresh" content="7">' in text
    assert 'id="relay-dead-letters">2</a>' in text
    assert ">billing</a></td><td>1</td>" in text
    assert "compensated" in text
    assert "running" in text
    assert "waiting behind a parked key" in text
    assert "no --broker given" in text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["x-frame-options"] == "DENY"


def test_dashboard_dead_letter_list_filters_by_topic_key_error_and_age(
    client: TestClient, seeded: Seeded
) -> None:
    """Each filter narrows the list; the old letter is found by age, the card one by error text."""
    card, old = seeded.letters["card"], seeded.letters["old"]

    def ids(query: str) -> set[int]:
        page = client.get(f"/dead-letters?{query}")
        assert page.status_code == 200
        return {i for i in (card, old) if f'data-id="{i}"' in page.text}

    assert ids("") == {card, old}
    assert ids("topic=payments") == {card}
    assert ids("key=order-7") == {old}
    assert ids("error=TIMEOUTerror") == {old}  # case-insensitive on both backends
    assert ids("older_than=3600") == {old}
    assert ids("newer_than=3600") == {card}
    assert ids("error=100%25") == set()  # % is a literal, not a wildcard


def test_dashboard_dead_letter_page_shows_envelope_headers_payload_escaped(
    client: TestClient, seeded: Seeded
) -> None:
    """One message: envelope, payload and error, with markup in them escaped, never interpreted."""
    page = client.get(f"/dead-letters/{seeded.letters['card']}")
    assert page.status_code == 200
    assert "cust-1" in page.text
    assert "&#34;card&#34;: &#34;4111&#34;" in page.text
    assert HOSTILE not in page.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    assert "BrokerError: payload too large" in page.text


def test_dashboard_retry_puts_dead_letters_back_under_their_ids(
    client: TestClient, seeded: Seeded, db_url: str
) -> None:
    """Confirm says what happens; retry puts the row back under its id, stamped with who, and it leaves the list."""
    csrf = login(client)
    card = seeded.letters["card"]
    confirm = client.get(f"/dead-letters/confirm?action=retry&id={card}")
    assert confirm.status_code == 200
    assert "under its original id" in confirm.text
    result = client.post(
        "/dead-letters/retry", data={"csrf": csrf, "id": [str(card)]}, headers={"Origin": BASE}
    )
    assert result.status_code == 200
    assert "1 <small>of 1 dead letter(s) back in the outbox" in result.text
    o, dl = outbox_tables().outbox, outbox_tables().dead_letter
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(o.c.key).where(o.c.id == card, o.c.published_at.is_(None))).scalar_one()
            == "cust-1"
        )
        retried_by = conn.execute(sa.select(dl.c.retried_by).where(dl.c.id == card)).scalar_one()
    engine.dispose()
    assert retried_by.startswith("alice (dashboard")
    assert f'data-id="{card}"' not in client.get("/dead-letters").text
    # The same retry again changes nothing: it is retried already.
    again = client.post(
        "/dead-letters/retry", data={"csrf": csrf, "id": [str(card)]}, headers={"Origin": BASE}
    )
    assert "0 <small>of 1" in again.text


def test_dashboard_purge_deletes_the_chosen_dead_letters(
    client: TestClient, seeded: Seeded, db_url: str
) -> None:
    """Purging one relay and one consumer dead letter deletes exactly those rows."""
    csrf = login(client)
    before = counts(db_url)
    old = seeded.letters["old"]
    page = client.get(f"/dead-letters/confirm?action=purge&id={old}")
    assert "deleted for good" in page.text
    result = client.post(
        "/dead-letters/purge", data={"csrf": csrf, "id": [str(old)]}, headers={"Origin": BASE}
    )
    assert "1 <small>dead letter(s) purged" in result.text
    consumer = client.post(
        "/consumer-dead-letters/purge",
        data={"csrf": csrf, "id": [str(seeded.consumer_letter)]},
        headers={"Origin": BASE},
    )
    assert "1 <small>consumer dead letter(s) purged" in consumer.text
    after = counts(db_url)
    assert after["outbox_dead_letter"] == before["outbox_dead_letter"] - 1
    assert after["outboxkit_inbox_dead_letter"] == before["outboxkit_inbox_dead_letter"] - 1
    assert after["outbox"] == before["outbox"]


def test_dashboard_consumer_dead_letters_list_detail_and_retry_needs_handlers(
    client: TestClient, seeded: Seeded, db_url: str
) -> None:
    """The consumer list and one entry show the error and payload; retry without --handlers is refused."""
    listing = client.get("/consumer-dead-letters?group=billing")
    assert f'data-id="{seeded.consumer_letter}"' in listing.text
    assert f'data-id="{seeded.consumer_letter}"' not in client.get("/consumer-dead-letters?group=other").text
    detail = client.get(f"/consumer-dead-letters/{seeded.consumer_letter}")
    assert "ValueError: bad amount" in detail.text
    assert "&#34;amount&#34;: -1" in detail.text
    csrf = login(client)
    before = counts(db_url)
    refused = client.post(
        "/consumer-dead-letters/retry",
        data={"csrf": csrf, "id": [str(seeded.consumer_letter)]},
        headers={"Origin": BASE},
    )
    assert refused.status_code == 403
    assert "--handlers" in refused.text
    assert counts(db_url) == before


def test_dashboard_sagas_list_search_and_timeline(client: TestClient, seeded: Seeded) -> None:
    """Sagas filter by state; search by id opens the saga; its step log is drawn as an SVG timeline."""
    running = client.get("/sagas?state=running").text
    assert str(seeded.running_saga) in running
    assert str(seeded.compensated_saga) not in running
    found = client.get(f"/sagas?id={seeded.compensated_saga}")
    assert found.status_code == 303
    page = client.get(found.headers["location"])
    assert page.status_code == 200
    assert '<svg id="timeline"' in page.text
    assert "1 reserve_stock" in page.text  # a lane per step
    assert "refused" in page.text
    assert "compensated" in page.text
    assert "sold out" in page.text
    assert client.get("/sagas?state=nonsense").status_code == 400


def test_dashboard_saga_retry_and_abort_are_recorded_and_refused_when_final(
    client: TestClient, seeded: Seeded, db_url: str
) -> None:
    """Retry of a waiting saga is recorded with who; any action on a compensated saga is a 409 that writes nothing."""
    csrf = login(client, name="bob")
    sid = seeded.running_saga
    assert "Retry now" in client.get(f"/sagas/{sid}/confirm?action=retry").text
    result = client.post(f"/sagas/{sid}/retry", data={"csrf": csrf}, headers={"Origin": BASE})
    assert result.status_code == 200
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        last_entry = saga.select_step_log(conn, sid)[-1]
    engine.dispose()
    assert last_entry.kind is saga.StepLogKind.RETRY_REQUESTED
    assert last_entry.detail is not None
    assert last_entry.detail.startswith("by bob (dashboard")
    before = counts(db_url)
    for action in ("retry", "abort"):
        refused = client.post(
            f"/sagas/{seeded.compensated_saga}/{action}", data={"csrf": csrf}, headers={"Origin": BASE}
        )
        assert refused.status_code == 409
        assert "nothing to" in refused.text
    assert counts(db_url) == before


def test_dashboard_actions_without_login_or_with_forged_tokens_change_nothing(
    client: TestClient, seeded: Seeded, db_url: str
) -> None:
    """No login, a wrong token, a forged CSRF token and a cross-site post each get a 403 page; no row changes."""
    before = counts(db_url)
    card = str(seeded.letters["card"])
    assert client.post("/dead-letters/retry", data={"csrf": "", "id": [card]}).status_code == 403
    wrong = client.post("/login", data={"token": "not-the-token-at-all"}, headers={"Origin": BASE})
    assert wrong.status_code == 403
    assert "wrong token" in wrong.text
    csrf = login(client)
    forged = client.post(
        "/dead-letters/retry", data={"csrf": "forged" + csrf, "id": [card]}, headers={"Origin": BASE}
    )
    assert forged.status_code == 403
    assert "CSRF" in forged.text
    missing = client.post("/dead-letters/purge", data={"id": [card]}, headers={"Origin": BASE})
    assert missing.status_code == 403
    cross = client.post(
        "/dead-letters/purge", data={"csrf": csrf, "id": [card]}, headers={"Origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    assert "cross-site" in cross.text
    fetch_site = client.post(
        f"/sagas/{seeded.running_saga}/abort", data={"csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert fetch_site.status_code == 403
    cross_login = client.post("/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"})
    assert cross_login.status_code == 403
    assert client.post("/logout", data={"csrf": "forged"}, headers={"Origin": BASE}).status_code == 403
    assert client.post("/logout", data={"csrf": csrf}, headers={"Origin": BASE}).status_code == 303
    after = client.post("/dead-letters/purge", data={"csrf": csrf, "id": [card]}, headers={"Origin": BASE})
    assert after.status_code == 403  # the session is gone
    assert "log in" in after.text
    assert client.get("/login").status_code == 200
    assert counts(db_url) == before


def test_dashboard_bad_filters_and_unknown_ids_are_4xx_pages(
    client: TestClient, seeded: Seeded, db_url: str
) -> None:
    """Oversized, malformed and injection-shaped values and ids that do not exist: a clear 4xx page, nothing changed."""
    before = counts(db_url)
    csrf = login(client)
    for path, status in [
        ("/dead-letters?topic=" + "x" * 201, 400),
        ("/dead-letters?older_than=soon", 400),
        ("/dead-letters?older_than=nan", 400),
        ("/consumer-dead-letters?error=" + "e" * 5000, 400),
        ("/dead-letters/999999", 404),
        ("/dead-letters/1%3B%20DROP%20TABLE%20outbox", 400),
        ("/consumer-dead-letters/424242", 404),
        ("/sagas/00000000-0000-0000-0000-000000000000", 404),
        ("/sagas/not-a-uuid", 400),
        ("/dead-letters/confirm?action=explode&id=1", 400),
        ("/dead-letters/confirm?action=retry&id=999999", 404),
    ]:
        page = client.get(path)
        assert page.status_code == status, path
        assert "Nothing was changed" in page.text
    injected = client.get(
        "/dead-letters", params={"topic": "x' OR '1'='1", "key": "'; DROP TABLE outbox; --"}
    )
    assert injected.status_code == 200
    assert "No dead letter matches" in injected.text
    gone = client.post("/dead-letters/retry", data={"csrf": csrf, "id": ["999999"]}, headers={"Origin": BASE})
    assert gone.status_code == 404
    bad = client.post(
        "/dead-letters/purge", data={"csrf": csrf, "id": ["1 OR 1=1"]}, headers={"Origin": BASE}
    )
    assert bad.status_code == 400
    huge = client.post("/dead-letters/purge", content=b"id=1&" * 20000, headers={"Origin": BASE,
                       "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert huge.status_code == 413
    assert counts(db_url) == before


def test_dashboard_read_only_offers_no_action_and_refuses_posts(db_url: str, seeded: Seeded) -> None:
    """--read-only: no action buttons; a logged-in POST is refused and changes nothing."""
    app = create_app(DashboardConfig(db_url=db_url, token=TOKEN, read_only=True))
    with TestClient(app, base_url=BASE, follow_redirects=False) as c:
        assert "Retry selected" not in c.get("/dead-letters").text
        assert "read-only" in c.get(f"/sagas/{seeded.running_saga}").text
        c.post("/login", data={"token": TOKEN}, headers={"Origin": BASE})
        page = c.get(f"/dead-letters/confirm?action=retry&id={seeded.letters['card']}")
        assert 'id="confirm"' not in page.text
        assert "read-only" in page.text
        before = counts(db_url)
        csrf = c.get("/").text  # the layout shows the logout form, with the token
        token = csrf_of(csrf)
        refused = c.post("/dead-letters/retry", data={"csrf": token, "id": [str(seeded.letters["card"])]},
                         headers={"Origin": BASE})  # fmt: skip
        assert refused.status_code == 403
        assert "read-only" in refused.text
        assert counts(db_url) == before


def test_dashboard_under_read_only_grants_reads_everything_and_offers_no_action(pg_url: str) -> None:
    """As the documented SELECT-only role every page loads, actions say which right is missing, a POST changes nothing."""
    seeded = seed(pg_url)
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text("DROP ROLE IF EXISTS outboxkit_dashboard"))
        conn.execute(sa.text(doc_block("grants:dashboard-readonly")))
    try:
        url = pg_url.replace("//outboxkit@", "//outboxkit_dashboard@", 1)
        app = create_app(DashboardConfig(db_url=url, token=TOKEN))
        before = counts(pg_url)
        with TestClient(app, base_url=BASE, follow_redirects=False) as c:
            for path in ["/", "/dead-letters", f"/dead-letters/{seeded.letters['card']}", "/consumer-dead-letters",
                         f"/consumer-dead-letters/{seeded.consumer_letter}", "/sagas", f"/sagas/{seeded.running_saga}"]:  # fmt: skip
                page = c.get(path)
                assert page.status_code == 200, path
            assert "lacks INSERT on outbox" in c.get("/dead-letters").text
            assert "lacks UPDATE on outboxkit_saga" in c.get(f"/sagas/{seeded.running_saga}").text
            assert "Retry selected" not in c.get("/dead-letters").text
            c.post("/login", data={"token": TOKEN}, headers={"Origin": BASE})
            csrf = csrf_of(c.get("/").text)
            refused = c.post("/dead-letters/purge", data={"csrf": csrf, "id": [str(seeded.letters["old"])]},
                             headers={"Origin": BASE})  # fmt: skip
            assert refused.status_code == 403
            assert "lacks" in refused.text
        assert counts(pg_url) == before
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text("DROP OWNED BY outboxkit_dashboard"))
            conn.execute(sa.text("DROP ROLE outboxkit_dashboard"))
        admin.dispose()


def test_dashboard_consumer_retry_runs_the_handler_once(db_url: str) -> None:
    """With --handlers, retrying a consumer dead letter runs its handler through the inbox: the effect lands once."""
    engine = sa.create_engine(db_url)
    domain.create_all(engine)
    fields = json.dumps(entry(payload={"n": 7}, key="o-7"))
    with engine.begin() as conn:
        letter_id = conn.execute(
            sa.text(
                "INSERT INTO outboxkit_inbox_dead_letter (consumer, stream, entry_id, topic, key, fields, error,"
                " deliveries, dead_lettered_at) VALUES ('billing', 'orders.created', '1-0', 'orders.created', 'o-7',"
                " :fields, 'no such table: test_effect', 2, :now) RETURNING id"
            ),
            {"fields": fields, "now": dt.datetime.now(dt.UTC)},
        ).scalar_one()
    app = create_app(DashboardConfig(db_url=db_url, token=TOKEN, registry=registry))
    with TestClient(app, base_url=BASE, follow_redirects=False) as c:
        assert "Retry selected" in c.get("/consumer-dead-letters").text
        csrf = login(c)
        for _ in range(2):  # twice: the inbox makes the second a duplicate
            done = c.post("/consumer-dead-letters/retry", data={"csrf": csrf, "id": [str(letter_id)]},
                          headers={"Origin": BASE})  # fmt: skip
            assert done.status_code == 200
        assert "processed" in done.text or "duplicate" in done.text
    assert count_effects(engine) == 1
    with engine.connect() as conn:
        retried = conn.execute(
            sa.text(f"SELECT retried_at FROM outboxkit_inbox_dead_letter WHERE id = {int(letter_id)}")
        ).scalar_one()
    assert retried is not None
    engine.dispose()


def test_dashboard_pages_never_show_url_passwords(pg_url: str) -> None:
    """Database and broker passwords are masked on every page, also when the broker is unreachable."""
    secret = "Sentinel-pw-dash-41"
    seeded = seed(pg_url)
    url = pg_url.replace("//outboxkit@", f"//outboxkit:{secret}@", 1)  # the test server trusts loopback
    broker = f"redis://:{secret}@127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_app(DashboardConfig(db_url=url, broker_url=broker, token=TOKEN))
    with TestClient(app, base_url=BASE) as c:
        pages = [
            c.get(p) for p in ("/", "/dead-letters", f"/sagas/{seeded.running_saga}", "/dead-letters/424242")
        ]
    assert all(secret not in page.text for page in pages)
    assert "***" in pages[0].text
    assert "broker unreachable" in pages[0].text


def test_dashboard_refuses_a_missing_or_unmigrated_database(tmp_path: Path) -> None:
    """No SQLite file (none is created by looking) or no outbox tables: a typed error before anything serves."""
    missing = tmp_path / "none.db"
    with pytest.raises(ConfigError, match="no SQLite database at"):
        create_app(DashboardConfig(db_url=f"sqlite:///{missing}", token=TOKEN))
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    engine = sa.create_engine(f"sqlite:///{empty}")
    with engine.connect():
        pass
    engine.dispose()
    with pytest.raises(SchemaMissingError, match="outbox"):
        create_app(DashboardConfig(db_url=f"sqlite:///{empty}", token=TOKEN))
