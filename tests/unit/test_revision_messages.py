"""The toolkit's revision messages name the toolkit, not a work-in-progress tag.

`alembic history` on a path-B database interleaves the app's revisions with the
toolkit's, so each toolkit message says whose it is.
"""

from __future__ import annotations

from alembic.script import ScriptDirectory

from outbox import migrations_path


def test_every_toolkit_revision_message_starts_with_outboxkit() -> None:
    scripts = list(ScriptDirectory(str(migrations_path())).walk_revisions())
    assert scripts
    for script in scripts:
        message = (script.doc or "").strip()
        assert not message.lower().startswith("pre:"), script.revision
        assert message.startswith("outboxkit: "), (script.revision, message)
