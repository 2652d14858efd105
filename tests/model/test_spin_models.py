"""The Promela models of docs/model/ checked by Spin: the protocol holds, and each seeded bug is caught.

Each case generates the verifier (``spin -a``), compiles it with gcc and runs
an exhaustive bounded search (``./pan``). A correct model must end with
``errors: 0`` and a complete search; a seeded bug must end with a
counter-example trail. See docs/adr/0012-model-checked-relay-protocol.md.

``OUTBOXKIT_MODEL_LONG=1`` adds the long check: crash, freeze, data loss and
lost reply at once (about 22 million states, 3 minutes and 1.1 GiB here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "docs" / "model"

# Spin is installed by scripts/test (Debian package `spin`): in CI it must be there.
_MISSING = [tool for tool in ("spin", "gcc") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(
    bool(_MISSING) and not os.environ.get("CI"),
    reason=f"{' and '.join(_MISSING)} not installed (scripts/test installs spin as root; apt-get install spin gcc)",
)

# Fault budgets per case: the whole product at once is the long check.
_NONE = {"MAXCRASH": 0, "MAXEXPIRE": 0, "MAXLOSS": 0, "MAXLOSTREPLY": 0, "MAXREJECT": 0}


def _budget(**faults: int) -> list[str]:
    return [f"-D{name}={value}" for name, value in (_NONE | faults).items()]


def spin(tmp_path: Path, model: str, defines: list[str], *, timeout: float = 120) -> str:
    """Generate, compile and run the verifier of ``model``; return pan's report (trail left in tmp_path)."""
    source = tmp_path / model
    shutil.copy(MODELS / model, source)
    subprocess.run(["spin", "-a", *defines, model], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    subprocess.run(
        ["gcc", "-O1", "-w", "-DSAFETY", "-DCOLLAPSE", "-o", "pan", "pan.c"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=120,
    )
    # -m: depth bound far above the models' depth; -w22: a 4M-slot hash table.
    run = subprocess.run(
        ["./pan", "-m20000", "-w22"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return run.stdout + run.stderr


def trail(tmp_path: Path, model: str, defines: list[str]) -> str:
    """The counter-example of the last run, as Spin replays it."""
    replay = subprocess.run(
        ["spin", "-t", *defines, "-p", "-g", model],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return replay.stdout


def assert_holds(report: str) -> None:
    assert "errors: 0" in report, report
    assert "max search depth too small" not in report, report
    assert "Search not completed" not in report, report


RELAY_CASES = {
    "crash_and_takeover": _budget(MAXCRASH=1, MAXEXPIRE=1),
    "freezes_and_data_loss": _budget(MAXEXPIRE=2, MAXLOSS=1),
    "data_loss_and_lost_reply": _budget(MAXEXPIRE=1, MAXLOSS=1, MAXLOSTREPLY=1),
    "rejected_entry_and_takeover": _budget(MAXEXPIRE=1, MAXREJECT=1),
}


@pytest.mark.parametrize("case", sorted(RELAY_CASES))
def test_relay_protocol_holds(tmp_path: Path, case: str) -> None:
    """No committed row lost, first deliveries in order, no fenced batch lands: over every interleaving."""
    assert_holds(spin(tmp_path, "relay.pml", RELAY_CASES[case]))


@pytest.mark.skipif(
    not os.environ.get("OUTBOXKIT_MODEL_LONG"), reason="long check: set OUTBOXKIT_MODEL_LONG=1"
)
@pytest.mark.timeout(1800)
def test_relay_protocol_holds_under_every_fault_at_once(tmp_path: Path) -> None:
    """The long check: a crash, a freeze, a data loss and a lost reply in one run (~22 million states)."""
    defines = _budget(MAXCRASH=1, MAXEXPIRE=1, MAXLOSS=1, MAXLOSTREPLY=1)
    assert_holds(spin(tmp_path, "relay.pml", defines, timeout=1700))


def test_seeded_bug_without_fence_check_is_caught(tmp_path: Path) -> None:
    """The broker no longer compares fences: a frozen relay's batch lands after the new owner's."""
    defines = ["-DNO_FENCE_CHECK", *_budget(MAXEXPIRE=1)]
    report = spin(tmp_path, "relay.pml", defines)
    assert "assertion violated ((bn==0)||(my_epoch>=newest_accepted))" in report, report
    replay = trail(tmp_path, "relay.pml", defines)
    assert "[expired = 1]" in replay
    assert "spin: text of failed assertion: assert(((bn==0)||(my_epoch>=newest_accepted)))" in replay


def test_stale_incarnation_reply_is_caught_without_compare_and_set(tmp_path: Path) -> None:
    """The relay before issue 17 rolled the recorded incarnation back and re-published without end."""
    report = spin(tmp_path, "relay.pml", ["-DSTALE_ADOPT", *_budget(MAXEXPIRE=1, MAXLOSS=1)])
    assert "assertion violated (stream_len<12)" in report, report


def test_idle_relay_without_probe_loses_entries_after_data_loss(tmp_path: Path) -> None:
    """The relay before issue 17: entries the broker lost while nothing new was written never came back."""
    report = spin(tmp_path, "relay.pml", ["-DNO_IDLE_PROBE", *_budget(MAXLOSS=1)])
    assert "assertion violated delivered[r]" in report, report


def test_consumer_lease_and_inbox_hold(tmp_path: Path) -> None:
    """No handler effect applied twice and none lost, under lease expiry, crashes and a lost database."""
    assert_holds(spin(tmp_path, "consumer.pml", []))


@pytest.mark.parametrize(
    ("variant", "violated"),
    [("NO_INBOX", "(effects[m]<=1)"), ("ACK_FIRST", "(effects[k]==1)")],
)
def test_consumer_seeded_bugs_are_caught(tmp_path: Path, variant: str, violated: str) -> None:
    """Without the inbox row an effect doubles; acknowledging before the commit loses one."""
    report = spin(tmp_path, "consumer.pml", [f"-D{variant}"])
    assert f"assertion violated {violated}" in report, report
