"""The consumer registries ``outboxkit consume`` runs, one per service.

    outboxkit consume examples.order_saga.services:order     --db <order db>     --group order-service ...
    outboxkit consume examples.order_saga.services:inventory --db <inventory db> --group inventory-service ...
    outboxkit consume examples.order_saga.services:payment   --db <payment db>   --group payment-service ...

The style and the saga's reply timeout come from the environment
(``ORDER_SAGA_STYLE``: orchestrated or choreographed; ``ORDER_SAGA_STEP_TIMEOUT``
in seconds), so one module serves both styles.
"""

from __future__ import annotations

import datetime as dt
import os

from outboxkit.demo import (
    Style,
    choreographed_registries,
    make_orchestrator,
    orchestrated_registries,
    order_saga,
)

STYLE = Style(os.environ.get("ORDER_SAGA_STYLE", Style.ORCHESTRATED.value))
STEP_TIMEOUT = dt.timedelta(seconds=float(os.environ.get("ORDER_SAGA_STEP_TIMEOUT", "30")))

orchestrator = make_orchestrator(order_saga(timeout=STEP_TIMEOUT))
_registries = (
    orchestrated_registries(orchestrator) if STYLE is Style.ORCHESTRATED else choreographed_registries()
)
order = _registries["order"]
inventory = _registries["inventory"]
payment = _registries["payment"]
