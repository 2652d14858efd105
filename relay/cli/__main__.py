"""``python -m relay.cli`` runs the ``outboxkit`` command."""

from __future__ import annotations

import sys

from ._main import main

sys.exit(main())
