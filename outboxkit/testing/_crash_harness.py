"""Crash-point testing for your own handlers, relays and sagas.

The toolkit's code calls :func:`outbox.crash_point` at the instants
that matter (see :data:`CRASH_POINTS`). This module runs *your* process —
``outboxkit consume your.module:registry ...``, ``outboxkit relay ...``, or a
script of yours — with ``OUTBOXKIT_CRASH_AT`` set, so the process kills itself
with SIGKILL exactly there; then runs it again without the crash, and lets you
assert your invariants (each effect once, no event lost)::

    from outboxkit.testing import crash_matrix

    def test_billing_survives_every_crash():
        failures = crash_matrix(
            ["outboxkit", "consume", "billing.handlers:registry", "--db", db, "--broker", broker,
             "--group", "billing", "--once"],
            points=["inbox.after_handler", "inbox.after_commit"],
            reset=lambda: seed_messages(),          # before each point
            check=lambda: assert_charged_once(),     # after the recovery run
            env={**os.environ, "BILLING_DB": db},  # optional: the environment of the runs
        )
        assert failures == []

With pytest, the ``outboxkit_crash`` fixture (registered by the ``outboxkit``
pytest plugin) gives a :class:`CrashHarness` bound to the test's temporary
directory. See docs/testing.md.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from outbox import CRASH_AT_ENV, CRASH_POINTS, CRASH_SKIP_ENV

__all__ = ["CRASH_POINTS", "CrashHarness", "CrashRun", "crash_matrix", "run_process"]


@dataclass(frozen=True, slots=True)
class CrashRun:
    """How one run ended."""

    argv: tuple[str, ...]
    crash_at: str | None
    returncode: int
    output: str

    @property
    def crashed(self) -> bool:
        """The process died by SIGKILL (at the crash point)."""
        return self.returncode == -signal.SIGKILL


def run_process(
    argv: Sequence[str],
    *,
    crash_at: str | None = None,
    skip: int = 0,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    cwd: str | Path | None = None,
) -> CrashRun:
    """Run ``argv`` to its end, optionally dying at ``crash_at`` after ``skip`` earlier passes."""
    if crash_at is not None and crash_at not in CRASH_POINTS:
        msg = f"unknown crash point {crash_at!r}; known: {', '.join(sorted(CRASH_POINTS))}"
        raise ValueError(msg)
    child_env = dict(os.environ if env is None else env)
    child_env.pop(CRASH_AT_ENV, None)
    if crash_at is not None:
        child_env[CRASH_AT_ENV] = crash_at
        child_env[CRASH_SKIP_ENV] = str(skip)
    done = subprocess.run(  # noqa: S603 - the caller's own command
        list(argv),
        env=child_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CrashRun(tuple(argv), crash_at, done.returncode, done.stdout + done.stderr)


@dataclass
class CrashHarness:
    """Runs a command through each crash point and collects what went wrong."""

    env: Mapping[str, str] | None = None
    cwd: str | Path | None = None
    timeout: float = 120.0
    runs: list[CrashRun] = field(default_factory=list)

    def crash(self, argv: Sequence[str], point: str, *, skip: int = 0) -> CrashRun:
        """Run ``argv`` so that it dies at ``point``; record the run."""
        run = run_process(argv, crash_at=point, skip=skip, env=self.env, timeout=self.timeout, cwd=self.cwd)
        self.runs.append(run)
        return run

    def recover(self, argv: Sequence[str]) -> CrashRun:
        """Run ``argv`` to completion without any crash point; record the run."""
        run = run_process(argv, env=self.env, timeout=self.timeout, cwd=self.cwd)
        self.runs.append(run)
        return run


def crash_matrix(
    argv: Sequence[str],
    *,
    points: Iterable[str],
    reset: Callable[[], None],
    check: Callable[[], None],
    recover_argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> list[str]:
    """For each point: ``reset()``, run until the crash, run again to the end, ``check()``.

    Returns one line per failure (empty when every point held): the process
    did not reach the point, the recovery run failed, or ``check`` raised.
    """
    harness = CrashHarness(env=env, timeout=timeout)
    failures: list[str] = []
    for point in points:
        reset()
        crashed = harness.crash(argv, point)
        if not crashed.crashed:
            failures.append(f"{point}: the process never reached the crash point (exit {crashed.returncode})")
            continue
        recovered = harness.recover(recover_argv or argv)
        if recovered.returncode != 0:
            failures.append(
                f"{point}: the recovery run exited {recovered.returncode}: {recovered.output[-500:]}"
            )
            continue
        try:
            check()
        except AssertionError as exc:
            failures.append(f"{point}: {exc}")
    return failures
