"""``outboxkit demo``: the order saga's three services, relays and consumers in one process."""

from __future__ import annotations
