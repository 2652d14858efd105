"""Saga definitions are validated up front; policies, headers and the registry adapter behave as documented."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import inbox
import saga
from outbox import Envelope, ValidationError
from saga import Command, Local, RetryPolicy, SagaDefinition, SagaDefinitionError, Step


def _cmd(topic: str = "payment.commands", kind: str = "Charge") -> Command:
    return Command(topic=topic, type=kind, payload=lambda ctx: {"n": 1})


def _local() -> Local:
    return Local(lambda session, ctx: None)


def _saga(*steps: Step, name: str = "order") -> SagaDefinition:
    return SagaDefinition(name=name, steps=list(steps))


def test_saga_definition_valid_is_frozen_with_tuple_steps() -> None:
    """A valid definition keeps its steps as an immutable tuple."""
    definition = _saga(Step(name="a", action=_local()), Step(name="b", action=_cmd(), compensation=_cmd()))
    assert isinstance(definition.steps, tuple)
    assert [s.name for s in definition.steps] == ["a", "b"]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: SagaDefinition(name="", steps=[Step(name="a", action=_local())]), "saga name"),
        (lambda: SagaDefinition(name="order", steps=[]), "non-empty sequence of steps"),
        (
            lambda: _saga(Step(name="a", action=_local()), Step(name="a", action=_local())),
            "two steps named 'a'",
        ),
        (lambda: _saga(Step(name="has space", action=_local())), "step name"),
        (lambda: _saga(Step(name="a", action=_cmd(topic="bad topic!"))), "does not match"),
        (lambda: _saga(Step(name="a", action=_cmd(kind=""))), "type must be"),
        (lambda: _saga(Step(name="a", action=Command(topic="t", type="T", payload="x"))), "payload must be"),  # type: ignore[arg-type]
        (lambda: _saga(Step(name="a", action=Local("nope"))), "Local needs a callable"),  # type: ignore[arg-type]
        (lambda: _saga(Step(name="a", action="charge")), "Command or a Local"),  # type: ignore[arg-type]
        (
            lambda: _saga(Step(name="a", action=_local(), timeout=dt.timedelta(seconds=1))),
            "applies to commands",
        ),
        (lambda: _saga(Step(name="a", action=_cmd(), timeout=dt.timedelta(0))), "positive timedelta"),
        (lambda: _saga(Step(name="a", action=_cmd(), retry=3)), "RetryPolicy"),  # type: ignore[arg-type]
        (lambda: _saga("a"), "Step objects"),  # type: ignore[arg-type]
        (lambda: _saga(Step(name="a", action=_cmd(), retry=RetryPolicy(max_attempts=2))), "needs a timeout"),
    ],
)
def test_saga_definition_invalid_raises_definition_error(build: Callable[[], Any], match: str) -> None:
    """Every invalid part of a definition is refused with a message naming it."""
    with pytest.raises(SagaDefinitionError, match=match):
        build()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"backoff": dt.timedelta(seconds=-1)},
        {"multiplier": 0.5},
        {"backoff": dt.timedelta(seconds=10), "max_backoff": dt.timedelta(seconds=1)},
    ],
)
def test_saga_retry_policy_invalid_raises_definition_error(kwargs: dict[str, Any]) -> None:
    """Attempts below 1, negative backoff, shrinking multiplier or a cap below the backoff are refused."""
    with pytest.raises(SagaDefinitionError):
        RetryPolicy(**kwargs)


def test_saga_retry_policy_delay_grows_and_is_capped() -> None:
    """The wait doubles from the base backoff and never exceeds max_backoff."""
    policy = RetryPolicy(backoff=dt.timedelta(seconds=1), max_backoff=dt.timedelta(seconds=5))
    assert [policy.delay(n).total_seconds() for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert policy.delay(10_000) == dt.timedelta(seconds=5)


def test_saga_step_compensation_timeout_defaults() -> None:
    """A compensation command always has a reply timeout, so it is always retried."""
    assert Step(name="a", action=_cmd()).compensation_timeout() == saga.DEFAULT_COMPENSATION_TIMEOUT
    assert Step(
        name="a", action=_cmd(), timeout=dt.timedelta(seconds=3)
    ).compensation_timeout() == dt.timedelta(seconds=3)


def test_saga_orchestrator_refuses_duplicate_names_and_bad_topics() -> None:
    """Two definitions with one name, a bad topic or reply == timer topic are refused."""
    definition = _saga(Step(name="a", action=_local()))
    with pytest.raises(SagaDefinitionError, match="two saga definitions"):
        saga.Orchestrator([definition, definition])
    with pytest.raises(SagaDefinitionError, match="reply_topic"):
        saga.Orchestrator([definition], reply_topic="no spaces allowed")
    with pytest.raises(SagaDefinitionError, match="must differ"):
        saga.Orchestrator([definition], reply_topic="x", timer_topic="x")
    with pytest.raises(SagaDefinitionError, match="expected SagaDefinition"):
        saga.Orchestrator(["order"])  # type: ignore[list-item]


class FakeRegistry:
    """Anything with handler(topic) -> decorator, like inbox.Registry."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[..., None]] = {}

    def handler(self, topic: str) -> Callable[[saga.SagaHandler], saga.SagaHandler]:
        def register(func: saga.SagaHandler) -> saga.SagaHandler:
            self.handlers[topic] = func
            return func

        return register


def test_saga_register_adds_reply_and_timer_handlers() -> None:
    """register() puts one handler on the reply topic and one on the timer topic, calling the orchestrator."""
    orch = saga.Orchestrator(
        [_saga(Step(name="a", action=_local()))], reply_topic="r.replies", timer_topic="r.timers"
    )
    registry = FakeRegistry()
    on_reply, on_timer = saga.register(registry, orch)
    assert registry.handlers == {"r.replies": on_reply, "r.timers": on_timer}
    bad = Envelope(
        id=uuid.uuid4(),
        topic="r.replies",
        type="saga.reply",
        source="t",
        key=None,
        time=dt.datetime.now(dt.UTC),
    )
    with pytest.raises(saga.SagaMessageError):  # reaches handle_reply, which refuses a header-less message
        on_reply(bad, None)  # type: ignore[arg-type]
    with pytest.raises(saga.SagaMessageError):
        on_timer(bad, None)  # type: ignore[arg-type]


def test_saga_follow_up_headers_propagate_correlation_and_set_causation() -> None:
    """A follow-up event keeps the flow's correlation id and names its cause; a first event starts a flow."""
    cause = Envelope(
        id=uuid.uuid4(),
        topic="orders.events",
        type="OrderCreated",
        source="t",
        key="o-1",
        time=dt.datetime.now(dt.UTC),
        headers={"correlation_id": "flow-9"},
    )
    assert saga.follow_up_headers is inbox.follow_up_headers  # one copy (#10)
    assert saga.check_event_type("PaymentCharged") == "PaymentCharged"
    assert saga.follow_up_headers(cause, {"tenant": "acme"}) == {
        "tenant": "acme",
        "correlation_id": "flow-9",
        "causation_id": str(cause.id),
    }
    first = Envelope(id=uuid.uuid4(), topic="t", type="T", source="t", key=None, time=dt.datetime.now(dt.UTC))
    assert saga.follow_up_headers(first)["correlation_id"] == str(first.id)
    assert saga.new_flow_headers("c-1") == {"correlation_id": "c-1"}
    assert uuid.UUID(saga.new_flow_headers()["correlation_id"])
    with pytest.raises(ValidationError, match="PascalCase"):
        saga.check_event_type("payment_charged")


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({}, "'saga_id'"),
        ({"saga_id": "x", "saga_step": "1", "saga_attempt": "1", "saga_phase": "action"}, "malformed"),
        (
            {"saga_id": str(uuid.uuid4()), "saga_step": "-1", "saga_attempt": "1", "saga_phase": "action"},
            "out-of-range",
        ),
        (
            {"saga_id": str(uuid.uuid4()), "saga_step": "1", "saga_attempt": "1", "saga_phase": "undo"},
            "malformed",
        ),
    ],
)
def test_saga_reply_with_bad_headers_is_refused(headers: dict[str, str], match: str) -> None:
    """saga.reply refuses a command whose saga headers are missing or malformed, before writing anything."""
    command = Envelope(
        id=uuid.uuid4(),
        topic="t",
        type="T",
        source="t",
        key=None,
        time=dt.datetime.now(dt.UTC),
        headers=headers,
    )
    with pytest.raises(saga.SagaMessageError, match=match):
        saga.reply(None, command, ok=True)  # type: ignore[call-overload]
