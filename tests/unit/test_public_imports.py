"""The program uses only the stage packages' public names: no `relay._x`, `inbox._x`, ... from `outboxkit/`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = {"outbox", "brokers", "relay", "inbox", "saga"}


def _private_imports(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] in STAGES and any(part.startswith("_") for part in parts[1:]):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {name}")
    return found


def test_the_program_imports_no_private_module_of_a_stage_package() -> None:
    """Every module under outboxkit/ imports outbox, brokers, relay, inbox and saga through their public modules."""
    files = sorted((ROOT / "outboxkit").rglob("*.py"))
    assert len(files) > 20
    assert [hit for path in files for hit in _private_imports(path)] == []


def test_the_check_sees_a_private_import(tmp_path: Path) -> None:
    """The check itself: a `from relay._db import ...` line is reported."""
    sample = tmp_path / "cmd.py"
    sample.write_text(
        "import outbox\nfrom relay import Relay\nfrom relay._db import make_engine\nimport inbox._runner\n"
    )
    assert _private_imports(sample, tmp_path) == ["cmd.py:3: relay._db", "cmd.py:4: inbox._runner"]
