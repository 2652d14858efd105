"""Sagas on top of the outbox and the inbox. Arrives with the saga issue."""

from __future__ import annotations

__all__: list[str] = []
