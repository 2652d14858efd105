"""The wheel carries the Alembic scripts: `pip install outboxkit` alone can migrate."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests._cli import REPO_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO_ROOT),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    [built] = out.glob("outboxkit-*.whl")
    return built


def test_wheel_contains_migrations_and_packages(wheel: Path) -> None:
    """The wheel ships every package, the Redis Lua scripts, the typed marker and the migration scripts."""
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    assert "outbox/_migrations/env.py" in names
    assert "outbox/_migrations/versions/0001_outbox_tables.py" in names
    assert "outboxkit/alerts/outboxkit.rules.yml" in names  # read by `outboxkit alerts` (#13)
    assert {
        "outbox/__init__.py",
        "brokers/__init__.py",
        "brokers/redis_streams/__init__.py",
        "brokers/nats_jetstream/__init__.py",
        "brokers/sql_table/__init__.py",
        "brokers/memory/__init__.py",
        "relay/__init__.py",
        "inbox/__init__.py",
        "saga/__init__.py",
        "outboxkit/__init__.py",
        "outboxkit/__main__.py",
        "outboxkit/cli/__init__.py",
        "outboxkit/demo/__init__.py",
        "outboxkit/testing/pytest_plugin.py",
        "outboxkit/soak/__init__.py",
    } <= names
    lua = {
        name.rsplit("/", 1)[1]
        for name in names
        if name.startswith("brokers/redis_streams/") and name.endswith(".lua")
    }
    assert lua == {"publish_batch.lua", "acquire_lease.lua", "release_lease.lua", "heartbeat.lua"}
    assert "brokers/redis_cluster/publish_slot.lua" in names  # Redis Cluster's one script per slot
    assert "outbox/py.typed" in names
    # The dashboard's templates and stylesheet are package data (issue 14).
    assert {"outboxkit/dashboard/__init__.py", "outboxkit/dashboard/templates/base.html",
            "outboxkit/dashboard/templates/saga.html", "outboxkit/dashboard/static/dashboard.css"} <= names  # fmt: skip
    assert not any(
        name.startswith(("tests/", "outbox/brokers/", "relay/cli/", "saga/demo/")) for name in names
    )
    [entry_points] = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    text = archive.read(entry_points).decode()
    assert "outboxkit = outboxkit.cli:main" in text
    assert "outboxkit = outboxkit.testing.pytest_plugin" in text


def test_installed_wheel_migrates_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """Installed from the wheel and run away from the source tree, `python -m outboxkit migrate` creates the tables."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    url = f"sqlite:///{tmp_path / 'app.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXKIT_")}
    env["PYTHONPATH"] = str(target)
    code = (
        # `python -m outboxkit migrate`, with the interpreter's own check that the wheel's copy runs.
        "import runpy, sys, outbox;"
        "assert outbox.__file__.startswith(sys.argv[1]), outbox.__file__;"
        "print(outbox.migrations_path()); sys.argv = ['outboxkit', 'migrate', '--db', sys.argv[2]];"
        "runpy.run_module('outboxkit', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(target), url],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(target / "outbox" / "_migrations")
    import sqlalchemy as sa  # noqa: PLC0415

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert "outbox" in sa.inspect(conn).get_table_names()
    engine.dispose()


def test_installed_wheel_runs_the_demo_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """`pip install outboxkit && outboxkit demo`: the demo's services ship in the wheel (outboxkit.demo) and run."""
    assert "outboxkit/demo/__init__.py" in set(zipfile.ZipFile(wheel).namelist())
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXKIT_")}
    env["PYTHONPATH"] = str(target)
    code = (
        "import sys, outboxkit.demo; from outboxkit.cli import main;"
        "assert outboxkit.demo.__file__.startswith(sys.argv[1]), outboxkit.demo.__file__;"
        "sys.exit(main(['demo', '--orders', '3', '--pace', '0.1']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All consistent" in done.stdout


def test_installed_wheel_serves_the_documented_version_locations_line(wheel: Path, tmp_path: Path) -> None:
    """With the wheel installed, the example's plain alembic.ini (`outbox:_migrations/versions`) works (#9)."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    app = tmp_path / "app"
    shutil.copytree(
        REPO_ROOT / "examples" / "existing_app",
        app,
        ignore=shutil.ignore_patterns("__pycache__", "test_*.py"),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXKIT_")}
    env["PYTHONPATH"] = str(target)
    env["SHOP_DATABASE_URL"] = f"sqlite:///{tmp_path / 'shop.db'}"

    def alembic(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            env=env,
            cwd=app,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "(outboxkit) (head)" in alembic("heads")
    alembic("upgrade", "heads")
    assert "No new upgrade operations detected." in alembic("check")
