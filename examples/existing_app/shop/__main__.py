"""`python -m shop migrate|order|events URL ...`: the shop from the command line."""

from __future__ import annotations

import json
import sys
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

import outbox

from .migrate import upgrade
from .service import place_order


def main(argv: list[str]) -> int:
    """Run one shop command."""
    if len(argv) < 2:
        print("usage: python -m shop migrate|order|events URL [customer total]", file=sys.stderr)
        return 2
    command, url = argv[0], argv[1]
    if command == "migrate":
        upgrade(url)
        return 0
    engine = sa.create_engine(url)
    if command == "order":
        with Session(engine) as session, session.begin():
            message_id = place_order(session, argv[2], Decimal(argv[3]))
        print(f"order placed, event {message_id}")
        return 0
    table = outbox.outbox_tables().outbox
    with engine.connect() as conn:
        for row in conn.execute(sa.select(table).order_by(table.c.id)):
            print(
                json.dumps(
                    {"id": str(row.message_id), "topic": row.topic, "key": row.key, "payload": row.payload}
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
