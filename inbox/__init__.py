"""The consume side: inbox table, idempotent handlers and the consumer runner.

Arrives with the inbox issue.
"""

from __future__ import annotations

__all__: list[str] = []
