"""The README's quickstart example runs end to end on the embedded default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests._cli import cli_env

HERE = Path(__file__).resolve().parent


def test_quickstart_commits_one_event_and_rolls_back_the_other(tmp_path: Path) -> None:
    """The order o-1 and its event commit; the rolled-back order o-2 leaves no event."""
    url = f"sqlite:///{tmp_path / 'quickstart.db'}"
    done = subprocess.run(
        [sys.executable, str(HERE / "quickstart.py"), url],
        env=cli_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("committed order o-1 with event ")
    assert lines[1] == "rolled back order o-2: no event"
    assert '"key": "o-1"' in lines[2]
    assert len(lines) == 3
