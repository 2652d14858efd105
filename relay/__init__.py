"""The relay: forwards committed outbox rows to the broker.

The daemon arrives with the relay issue; this package currently holds the
``outboxkit`` command line (``relay.cli``).
"""

from __future__ import annotations

__all__: list[str] = []
