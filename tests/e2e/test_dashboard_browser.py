"""The dashboard in a real browser (issue 14): Debian's Chromium, headless, driven by Playwright,
against ``outboxkit dashboard`` running as its own process on 127.0.0.1.

Skipped with a reason when Chromium is not installed, except in CI, where
scripts/test installs it. ``OUTBOXKIT_TEST_SCREENSHOTS=DIR`` also saves a PNG
of each page there (docs/img/ holds the ones in docs/dashboard.md).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect, sync_playwright

from outbox import outbox_tables
from tests._cli import REPO_ROOT, cli_env
from tests._dashboard import TOKEN, Seeded, seed
from tests._saga import TIMERS

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("OUTBOXKIT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
SHOTS = os.environ.get("OUTBOXKIT_TEST_SCREENSHOTS")
START_TIMEOUT_S = 30


def _need_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs it (apt-get install chromium)")
    pytest.skip(
        f"no Chromium at {CHROMIUM}: apt-get install chromium (scripts/test does) to run the browser tests"
    )


def start_dashboard(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``outboxkit dashboard ARGS --port 0``; return the process and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "outboxkit", "dashboard", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the first line names the address (bounded by the test timeout)
    if " on http://" not in line:
        proc.kill()
        _, err = proc.communicate(timeout=START_TIMEOUT_S)  # also closes the pipes
        pytest.fail(f"the dashboard did not start: {line!r} {err[-2000:]!r}")
    return proc, line.split(" on ", 1)[1].strip()


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM, then wait (bounded); return the exit status and what it wrote on stderr."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=5)
        raise
    return proc.returncode, err


@pytest.fixture
def seeded(sqlite_url: str) -> Seeded:
    return seed(sqlite_url)


@pytest.fixture
def dashboard(sqlite_url: str, seeded: Seeded) -> Iterator[str]:
    _need_chromium()  # before starting anything
    proc, url = start_dashboard(
        "--db", sqlite_url, "--token", TOKEN, "--timer-topic", TIMERS, "--refresh", "0"
    )
    try:
        yield url
    finally:
        code, err = stop(proc)
        assert (code, err) == (0, "")  # SIGTERM is a clean stop; nothing was logged, no traceback


@pytest.fixture
def page(dashboard: str) -> Iterator[Page]:
    profile = tempfile.mkdtemp(prefix="outboxkit-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1360, "height": 900}, base_url=dashboard,
            )  # fmt: skip
            try:
                yield context.new_page()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def test_dashboard_browser_overview_filter_retry_and_timeline(
    page: object, seeded: Seeded, sqlite_url: str
) -> None:
    """Load the overview, filter dead letters, retry one and see it leave the list and come back in the outbox,
    then open a saga's timeline."""
    page.goto("/")
    expect(page.locator("#relay-dead-letters")).to_have_text("2")
    expect(page.locator("h1")).to_contain_text("Overview")
    shot(page, "overview")

    page.goto("/dead-letters")
    page.fill("input[name=topic]", "payments")
    page.click("#filters button[type=submit]")
    card = seeded.letters["card"]
    expect(page.locator("#letters tr[data-id]")).to_have_count(1)
    expect(page.locator(f'tr[data-id="{card}"]')).to_be_visible()
    shot(page, "dead-letters")
    page.click(f'a[href="/dead-letters/{card}"]')
    expect(page.locator("#payload")).to_contain_text("<script>alert('x')</script>")  # shown as text
    shot(page, "dead-letter")

    page.goto("/login?next=/dead-letters")
    page.fill("input[name=token]", TOKEN)
    page.fill("input[name=name]", "erin")
    page.click("form.card button[type=submit]")
    expect(page).to_have_url(re.compile(r"/dead-letters$"))
    page.check(f'tr[data-id="{card}"] input[type=checkbox]')
    page.click("#retry-selected")
    expect(page.locator("h1")).to_contain_text("Retry 1 relay dead letter")
    shot(page, "confirm-retry")
    page.click("#confirm")
    expect(page.locator("#result")).to_contain_text("1 of 1 dead letter(s) back in the outbox")
    page.goto("/dead-letters")
    expect(page.locator(f'tr[data-id="{card}"]')).to_have_count(0)
    o = outbox_tables().outbox
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(o.c.key).where(o.c.id == card, o.c.published_at.is_(None))).scalar_one()
            == "cust-1"
        )
    engine.dispose()

    page.goto("/sagas")
    page.click(f'a[href="/sagas/{seeded.compensated_saga}"]')
    timeline = page.locator("svg#timeline")
    expect(timeline).to_be_visible()
    expect(timeline.locator("g.marker.fail")).to_have_count(1)  # the refused reservation
    expect(timeline.locator("g.marker.undo")).not_to_have_count(0)
    expect(page.locator("#saga-state")).to_have_text("compensated")
    shot(page, "saga")
