"""The shipped alerting rules: `outboxkit alerts` prints them, promtool accepts them and their unit tests pass."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from outboxkit.cli._alerts_cmd import alerts, rules_text
from tests._cli import run_cli

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.e2e
PROMTOOL = shutil.which("promtool")
# In CI a missing promtool is a broken setup (scripts/test installs it), not a reason to skip.
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"),
    reason="promtool not installed: `apt-get install prometheus` (scripts/test does it when run as root)",
)


@pytest.fixture(scope="module")
def printed() -> str:
    """What ``outboxkit alerts`` prints, from a real process (one per module: it takes seconds)."""
    result = run_cli("alerts")
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def rules_dir(tmp_path: Path, printed: str) -> Path:
    """The printed rules next to the promtool test file, as the test file names them."""
    (tmp_path / "outboxkit.rules.yml").write_text(printed)
    shutil.copy(HERE / "alerts" / "outboxkit.rules.test.yml", tmp_path)
    return tmp_path


def test_alerts_prints_the_packaged_rules_file(printed: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert printed == rules_text()
    assert "groups:" in printed
    # The command function itself: invoking the whole app in-process would point
    # structlog at a captured stream that is closed afterwards.
    alerts(print_path=True)
    assert Path(capsys.readouterr().out.strip()).read_text() == rules_text()


def test_every_alert_has_a_runbook_section_in_operations_doc() -> None:
    names = re.findall(r"- alert: (\w+)", rules_text())
    doc = (HERE.parents[1] / "docs" / "operations.md").read_text()
    headings = {m.lower() for m in re.findall(r"^### (\w+)", doc, flags=re.MULTILINE)}
    assert len(names) >= 8
    assert [n for n in names if n.lower() not in headings] == []


@needs_promtool
def test_promtool_checks_the_rules(rules_dir: Path) -> None:
    result = subprocess.run([PROMTOOL or "promtool", "check", "rules", "outboxkit.rules.yml"],
                            cwd=rules_dir, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass(rules_dir: Path) -> None:
    result = subprocess.run([PROMTOOL or "promtool", "test", "rules", "outboxkit.rules.test.yml"],
                            cwd=rules_dir, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
