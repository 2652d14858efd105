"""``python -m outboxkit`` runs the ``outboxkit`` command."""

from __future__ import annotations

import sys

from outboxkit.cli import main

sys.exit(main())
