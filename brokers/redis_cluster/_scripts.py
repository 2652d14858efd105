"""The Lua script the cluster publisher runs once per slot of a batch: ``publish_slot.lua``.

``KEYS``: the *armed* key of each of the ``ns`` streams, then their fence
keys (stream-major, ``nf`` per stream), then one stream key per entry.
``ARGV``: ``ns``, ``nf``, ``nt``, the ``nt`` tokens of the incarnation the
caller knows, the ``nf`` epochs, the entry count, then per entry its
``MAXLEN`` (or ``''``), its order key (or ``''``), its field count and the
fields.

1. A stream whose armed key is missing is new, or its master lost its data:
   nothing is written and ``NEW`` is returned. The publisher tells the two apart
   with the master's incarnation key, arms new streams (the key holds the
   master's token) and sends the script again. A stream armed under a token
   the caller does not know is refused (``STALE``): like on a single Redis, a
   caller with another incarnation writes nothing.
2. A fence newer than the batch's epoch refuses the whole call (``FENCED``);
   otherwise the fences are advanced (written only when they change).
3. The entries are appended as on a single Redis (see
   :mod:`brokers.redis_streams._publish`): ``ALL`` when every one went in,
   else one item per entry (id, ``-`` skipped, ``!error``).
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["slot_script"]


@functools.cache
def slot_script() -> str:
    """The text of ``publish_slot.lua`` (read once per process; found in a checkout and in a wheel)."""
    return resources.files(__package__).joinpath("publish_slot.lua").read_text(encoding="utf-8")
