"""Partition leases with epochs, and membership for fair rebalancing.

The key space is cut into ``partitions`` relay partitions (``key_hash % n``).
Every relay heartbeats its row in ``outboxkit_relay_member``; the live members
sorted by id decide the *target* owner of partition ``p``: ``members[p % m]``.
A relay then:

* renews the leases it holds and should hold,
* releases, between batches, the leases it holds but should not (a relay
  joined), and
* takes the partitions it should hold whose lease is free or expired (a relay
  left or died). Taking over increments the lease's ``epoch``.

A lease is trusted only until ``acquired_at + ttl - margin`` on this process's
monotonic clock; a relay that was paused (SIGSTOP, a long GC, a VM freeze)
finds its leases stale and renews before publishing again. The epoch covers
the remaining window: every batch carries the epochs of its partitions as
fences, and the broker refuses a batch older than the newest it has seen.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from brokers import Fence
from outbox import StorageError

from .tables import relay_lease, relay_member, relay_state

# Name of the relay_state row holding this database's id (for fence names).
_DATABASE_ID = "outboxkit:database_id"

__all__ = ["LeaseManager", "LeaseView"]


@dataclass(slots=True)
class LeaseView:
    """What this relay owns: partition -> epoch, and until when (monotonic) it may trust that."""

    epochs: dict[int, int] = field(default_factory=dict)
    valid_until: float = 0.0
    members: int = 1
    gained: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)

    def valid(self) -> bool:
        """The leases may still be trusted on this process's clock."""
        return time.monotonic() < self.valid_until


class LeaseManager:
    """Heartbeats, leases and rebalancing for one relay on one outbox table (``scope``)."""

    def __init__(
        self,
        engine: Engine,
        *,
        scope: str,
        relay_id: str,
        partitions: int,
        ttl: dt.timedelta,
    ) -> None:
        self.engine = engine
        self.scope = scope
        # The owner is this *process*: a relay restarted under the same --relay-id
        # is another owner, so it waits for the old lease to expire and bumps
        # the epoch — two live processes can never share an epoch.
        self.relay_id = f"{relay_id}#{uuid.uuid4().hex[:6]}"
        self.partitions = partitions
        self.ttl = ttl
        self.view = LeaseView()
        self._idle = False
        self.database_id = ""

    def fences(self, owned: Sequence[int]) -> list[Fence]:
        """The fences of ``owned`` partitions at their current epochs.

        Fence names carry the database's id as well as the table: services that
        share a broker (and the default table name) must never fence each other.
        """
        prefix = f"{self.database_id}:{self.scope}"
        return [Fence(f"{prefix}:{p}", self.view.epochs[p]) for p in owned if p in self.view.epochs]

    def ensure_database_id(self) -> str:
        """This database's id for fence names: made once by the first relay, then read by all."""
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    stored = conn.execute(
                        select(relay_state.c.value).where(relay_state.c.name == _DATABASE_ID)
                    ).scalar()
                    if stored is None:
                        stored = uuid.uuid4().hex[:16]
                        now = dt.datetime.now(dt.UTC)
                        conn.execute(
                            insert(relay_state).values(name=_DATABASE_ID, value=stored, updated_at=now)
                        )
            except IntegrityError:
                continue  # another relay made it at the same moment: read theirs
            self.database_id = str(stored)
            return self.database_id
        msg = "could not record the database id of the relay"
        raise StorageError(msg)

    def ensure_partitions(self) -> int:
        """Create the lease rows once; return the partition count in use (the stored one wins)."""
        self.ensure_database_id()
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    count = conn.execute(
                        select(func.count()).select_from(relay_lease).where(relay_lease.c.scope == self.scope)
                    ).scalar_one()
                    if count == 0:
                        conn.execute(
                            insert(relay_lease),
                            [
                                {"scope": self.scope, "partition": p, "epoch": 0}
                                for p in range(self.partitions)
                            ],
                        )
                        count = self.partitions
            except IntegrityError:
                continue  # another relay created them at the same moment: read theirs
            self.partitions = int(count)
            return self.partitions
        msg = "could not create the relay's lease rows"
        raise StorageError(msg)

    def refresh(self, *, now: dt.datetime) -> LeaseView:
        """Heartbeat, then renew, release and take leases toward this relay's fair share."""
        started = time.monotonic()
        with self.engine.begin() as conn:
            self._heartbeat(conn, now)
            members = self._live_members(conn, now)
            target = {p for p in range(self.partitions) if members[p % len(members)] == self.relay_id}
            held = set(self.view.epochs)
            release = sorted(held - target)
            if release:
                self._release(conn, release)
            epochs = self._acquire(conn, sorted(target), now)
        lost = sorted(held - set(epochs))
        gained = sorted(set(epochs) - held)
        self.view = LeaseView(
            epochs=epochs,
            valid_until=started + self.ttl.total_seconds() * 0.8,
            members=len(members),
            gained=gained,
            lost=lost,
        )
        return self.view

    def _heartbeat(self, conn: Connection, now: dt.datetime) -> None:
        values = {"heartbeat_at": now, "expires_at": now + self.ttl}
        done = conn.execute(
            update(relay_member)
            .where(relay_member.c.scope == self.scope, relay_member.c.relay_id == self.relay_id)
            .values(**values)
        ).rowcount
        if not done:
            conn.execute(
                insert(relay_member).values(
                    scope=self.scope,
                    relay_id=self.relay_id,
                    host=socket.gethostname()[:255],
                    pid=os.getpid(),
                    started_at=now,
                    idle=self._idle,
                    **values,
                )
            )
        # Forget relays that have been dead for a while (several TTLs).
        conn.execute(
            delete(relay_member).where(
                relay_member.c.scope == self.scope, relay_member.c.expires_at < now - 10 * self.ttl
            )
        )

    def _live_members(self, conn: Connection, now: dt.datetime) -> list[str]:
        rows = conn.execute(
            select(relay_member.c.relay_id)
            .where(relay_member.c.scope == self.scope, relay_member.c.expires_at > now)
            .order_by(relay_member.c.relay_id)
        ).scalars()
        members = list(rows)
        return members if self.relay_id in members else sorted([*members, self.relay_id])

    def _release(self, conn: Connection, partitions: list[int]) -> None:
        conn.execute(
            update(relay_lease)
            .where(
                relay_lease.c.scope == self.scope,
                relay_lease.c.partition.in_(partitions),
                relay_lease.c.owner == self.relay_id,
            )
            .values(owner=None, expires_at=None)
        )

    def _acquire(self, conn: Connection, target: list[int], now: dt.datetime) -> dict[int, int]:
        if not target:
            return {}
        lease = relay_lease
        mine = lease.c.owner == self.relay_id
        stmt = (
            update(lease)
            .where(
                lease.c.scope == self.scope,
                lease.c.partition.in_(target),
                or_(
                    mine,
                    lease.c.owner.is_(None),
                    and_(lease.c.expires_at.is_not(None), lease.c.expires_at < now),
                ),
            )
            .values(
                # A renewal keeps the epoch (nobody held the partition since:
                # the owner column would say so); every takeover bumps it.
                epoch=lease.c.epoch + case((mine, 0), else_=1),
                owner=self.relay_id,
                expires_at=now + self.ttl,
            )
            .returning(lease.c.partition, lease.c.epoch)
        )
        return {int(p): int(e) for p, e in conn.execute(stmt)}

    @property
    def idle(self) -> bool:
        """Whether this relay's member row says it is idle (writers NOTIFY at commit)."""
        return self._idle

    def set_idle(self, idle: bool, *, now: dt.datetime) -> bool:
        """Tell writers' commit trigger whether this relay waits for a NOTIFY; True if it changed."""
        if idle == self._idle:
            return False
        with self.engine.begin() as conn:
            conn.execute(
                update(relay_member)
                .where(relay_member.c.scope == self.scope, relay_member.c.relay_id == self.relay_id)
                .values(idle=idle, heartbeat_at=now)
            )
        self._idle = idle
        return True

    def leave(self) -> None:
        """Release every lease and leave the membership, so others take over at once."""
        with self.engine.begin() as conn:
            conn.execute(
                update(relay_lease)
                .where(relay_lease.c.scope == self.scope, relay_lease.c.owner == self.relay_id)
                .values(owner=None, expires_at=None)
            )
            conn.execute(
                delete(relay_member).where(
                    relay_member.c.scope == self.scope, relay_member.c.relay_id == self.relay_id
                )
            )
        self.view = LeaseView()
