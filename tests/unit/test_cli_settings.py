"""Settings without collisions: every variable of the command tree has one meaning and one declaration."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import typer

from inbox import ConsumerConfig
from outboxkit.cli import app
from relay import RelayConfig

# Variables that mean the same to every command reading them (outboxkit/cli/_options.py).
SHARED = {
    "OUTBOXKIT_DATABASE_URL",
    "OUTBOXKIT_BROKER_URL",
    "OUTBOXKIT_SCHEMA",
    "OUTBOXKIT_TABLE",
    "OUTBOXKIT_STREAM_PREFIX",
    "OUTBOXKIT_TOPIC_PARTITIONS",
    "OUTBOXKIT_DEFAULT_PARTITIONS",
    "OUTBOXKIT_GROUP",
    "OUTBOXKIT_ONCE",
    "OUTBOXKIT_DEBUG",
    "OUTBOXKIT_LOG_LEVEL",
    "OUTBOXKIT_LOG_FORMAT",
    "OUTBOXKIT_OTEL_SETUP",  # a root option: the same for every daemon
    "OUTBOXKIT_SAGA_TIMER_TOPIC",  # saga retry|abort and the dashboard send to the same topic
}


# Typer >= 0.29 vendors its own Click, so options are recognised by kind, not by class.
def _options(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for param in command.params:
        if param.param_type_name == "option":
            yield path, param
    for name, sub in getattr(command, "commands", {}).items():
        yield from _options(sub, (*path, name))


ROOT = typer.main.get_command(app)
OPTIONS = list(_options(ROOT))


def _envvars(option: Any) -> list[str]:
    envvar = option.envvar
    return [envvar] if isinstance(envvar, str) else list(envvar or [])


def test_no_variable_is_read_by_two_different_options() -> None:
    """A variable read by several commands comes from one declaration: same flag, same help, same default."""
    declarations: dict[str, set[tuple[object, ...]]] = defaultdict(set)
    readers: dict[str, list[str]] = defaultdict(list)
    for path, option in OPTIONS:
        for env in _envvars(option):
            declarations[env].add((tuple(option.opts), option.help, repr(option.default)))
            readers[env].append(" ".join(path) or "outboxkit")
    clashes = {env: sorted(readers[env]) for env, seen in declarations.items() if len(seen) > 1}
    assert clashes == {}
    assert len(readers["OUTBOXKIT_DATABASE_URL"]) >= 10  # the walk reached every subcommand


def test_each_variable_is_shared_or_named_after_its_command() -> None:
    """`OUTBOXKIT_<FLAG>` only for the shared meanings; a command's own option reads `OUTBOXKIT_<COMMAND>_<FLAG>`."""
    wrong = []
    for path, option in OPTIONS:
        for env in _envvars(option):
            own = f"OUTBOXKIT_{path[0].upper().replace('-', '_')}_" if path else None
            if env not in SHARED and not (own and env.startswith(own)):
                wrong.append(f"{' '.join(path)} {option.opts[0]}: {env}")
    assert wrong == []


@pytest.mark.parametrize(
    ("old", "relay_name", "consume_name"),
    [
        ("OUTBOXKIT_BATCH_SIZE", "OUTBOXKIT_RELAY_BATCH_SIZE", "OUTBOXKIT_CONSUME_BATCH_SIZE"),
        ("OUTBOXKIT_LEASE_TTL", "OUTBOXKIT_RELAY_LEASE_TTL", "OUTBOXKIT_CONSUME_LEASE_TTL"),
        ("OUTBOXKIT_METRICS_PORT", "OUTBOXKIT_RELAY_METRICS_PORT", "OUTBOXKIT_CONSUME_METRICS_PORT"),
        ("OUTBOXKIT_METRICS_HOST", "OUTBOXKIT_RELAY_METRICS_HOST", "OUTBOXKIT_CONSUME_METRICS_HOST"),
    ],
)
def test_relay_and_consume_read_their_own_variables(old: str, relay_name: str, consume_name: str) -> None:
    """The four settings that meant different things to `relay` and `consume` have one variable each."""
    read: dict[str, set[str]] = defaultdict(set)
    for path, option in OPTIONS:
        if path and path[0] in {"relay", "consume"}:
            read[path[0]].update(_envvars(option))
    assert relay_name in read["relay"]
    assert relay_name not in read["consume"]
    assert consume_name in read["consume"]
    assert consume_name not in read["relay"]
    assert old not in read["relay"] | read["consume"]


def _seconds(value: object) -> object:
    return value.total_seconds() if isinstance(value, dt.timedelta) else value


@pytest.mark.parametrize(("command", "config"), [("relay", RelayConfig), ("consume", ConsumerConfig)])
def test_daemon_defaults_are_the_configs_defaults(command: str, config: type) -> None:
    """Every option named like a config field defaults to that field's default (no copied literal)."""
    fields = {f.name: f for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    compared = 0
    for path, option in OPTIONS:
        if path == (command,) and option.name in fields:
            assert option.default == _seconds(fields[option.name].default), option.name
            compared += 1
    assert compared >= 8


def test_every_metrics_server_binds_loopback_by_default() -> None:
    """`--metrics-host` defaults to 127.0.0.1 for every daemon that has one."""
    hosts = {path: option.default for path, option in OPTIONS if "--metrics-host" in option.opts}
    assert set(hosts) == {("relay",), ("consume",)}
    assert set(hosts.values()) == {"127.0.0.1"}


@pytest.mark.parametrize("command", ["relay", "consume", "status", "migrate"])
def test_help_shows_each_variable_and_default(command: str) -> None:
    """`outboxkit <command> --help` names every variable the command reads, and the defaults."""
    # The help text straight from the command: invoking the app would run the root callback,
    # which configures logging for the whole process.
    sub = ROOT.commands[command]  # type: ignore[attr-defined]
    with sub.context_class(sub, info_name=command, terminal_width=200) as ctx:
        text = " ".join(sub.get_help(ctx).split())
    for path, option in OPTIONS:
        if path == (command,):
            for env in _envvars(option):
                assert env in text, env
    if command == "relay":
        assert "OUTBOXKIT_RELAY_BATCH_SIZE; default: 500" in text
