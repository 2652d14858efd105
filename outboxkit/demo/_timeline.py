"""The demo's timeline: selected structlog events rendered as aligned, timestamped lines.

The demo configures structlog with :meth:`Timeline.processor` as the whole
chain: the events worth showing (the services' ``demo.*`` events, the saga's
decisions, the inbox's skipped duplicates, warnings) are printed to stdout;
everything else is dropped. Colour only on a terminal.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, TextIO

import structlog

from saga import Command, Step

__all__ = ["Palette", "Timeline"]

_COLOURS = {"ok": "32", "fail": "31", "undo": "33", "info": "0", "dim": "2", "bold": "1", "warn": "35"}
_ICONS = {"ok": "✓", "fail": "✗", "undo": "↩", "info": "•", "dim": "→", "warn": "!", "dup": "="}
_ASCII_ICONS = {"ok": "+", "fail": "x", "undo": "<", "info": "*", "dim": ">", "warn": "!", "dup": "="}


class Palette:
    """Colour and symbols for one output stream."""

    def __init__(self, stream: TextIO) -> None:
        self.colour = stream.isatty()
        encoding = (getattr(stream, "encoding", None) or "ascii").lower().replace("-", "")
        self.icons = _ICONS if encoding in {"utf8", "utf_8"} else _ASCII_ICONS
        self.unicode = self.icons is _ICONS

    def paint(self, text: str, tone: str) -> str:
        """``text`` in the colour of ``tone`` on a terminal; unchanged otherwise."""
        code = _COLOURS.get(tone, "0")
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and code != "0" else text

    def text(self, value: str) -> str:
        """``value`` with non-ASCII symbols replaced when the stream cannot print them."""
        if self.unicode:
            return value
        return value.replace("\u2022", "*").replace("\u2192", "->")


class Timeline:
    """Prints events as they happen: ``+SECONDS  SERVICE  ORDER  ICON  TEXT``."""

    def __init__(self, stream: TextIO | None = None, *, steps: Sequence[Step] = ()) -> None:
        self.stream = stream or sys.stdout
        self._step_names = [step.name for step in steps]
        self._commands: dict[tuple[object, object], str] = {
            (index, phase): f"{action.type} sent to {action.topic.split('.')[0]}"
            for index, step in enumerate(steps)
            for phase, action in (("action", step.action), ("compensation", step.compensation))
            if isinstance(action, Command)
        }
        self.palette = Palette(self.stream)
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._duplicates_of: dict[str, str] = {}
        self.lines = 0

    def restart(self) -> None:
        """Count time from now (the services are ready) and print the column headings."""
        self.started = time.monotonic()
        now = dt.datetime.now(dt.UTC).strftime("%H:%M:%S.%f")[:-3]
        heading = f"  {'time':>8}  {'service':<9}  {'order':<7}  what happened (time 0 = {now} UTC)"
        with self._lock:
            self.stream.write(self.palette.paint(heading, "dim") + "\n")
            self.stream.flush()

    def line(self, service: str, order: str, tone: str, text: str, icon: str | None = None) -> None:
        """Print one timeline line."""
        elapsed = time.monotonic() - self.started
        mark = self.palette.icons[icon or tone]
        body = f"{mark}  {self.palette.text(text)}"
        row = f"  +{elapsed:6.2f}s  {service:<9}  {order:<7}  {self.palette.paint(body, tone)}"
        with self._lock:
            self.stream.write(row + "\n")
            self.stream.flush()
            self.lines += 1

    def processor(self, _logger: object, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        """A structlog processor: render what the timeline shows, drop everything."""
        name = str(event.get("event", ""))
        if name.startswith("demo."):
            self._demo(name, event)
        elif name.startswith("saga."):
            self._saga(name, event)
        elif name == "inbox.duplicate_skipped":
            order = self._duplicates_of.get(str(event.get("message_id")), "-")
            consumer = str(event.get("consumer", "")).removesuffix("-service")
            self.line(
                "inbox", _order(order), "dim", f"{consumer} skipped a duplicate ({event.get('topic')})", "dup"
            )
        elif method in {"warning", "error", "critical", "exception"}:
            self.line("warning", "-", "warn", f"{name}: {event.get('error') or ''}".strip())
        raise structlog.DropEvent

    def _demo(self, name: str, event: Mapping[str, Any]) -> None:
        service = str(event.get("service", "demo"))
        if name == "demo.relay_crashed":
            for message_id, order in zip(
                event.get("message_ids", []), event.get("order_ids", []), strict=False
            ):
                self._duplicates_of[str(message_id)] = str(order)
            self.line("relay", service, "fail", str(event.get("text", "")))
            return
        if name in {"demo.relay_restarted", "demo.relay_failed"}:
            self.line("relay", service, str(event.get("tone", "info")), str(event.get("text", "")), "info")
            return
        order = _order(str(event.get("order_id", "-")))
        self.line(service, order, str(event.get("tone", "info")), str(event.get("text", "")))

    def _saga(self, name: str, event: Mapping[str, Any]) -> None:
        order = _order(str(event.get("correlation_id", "-")))
        step = event.get("step")
        if name == "saga.step_command_sent":
            sent = self._commands.get((step, event.get("phase")), f"{event.get('step_name')}: command sent")
            attempt = event.get("attempt")
            self.line("saga", order, "dim", sent if attempt == 1 else f"{sent} again (attempt {attempt})")
        elif name == "saga.timed_out":
            self.line("saga", order, "fail", f"{self._step_name(step)}: no reply in time")
        elif name == "saga.compensating":
            self.line("saga", order, "undo", f"compensating, because {event.get('reason')}")
        elif name == "saga.completed":
            self.line("saga", order, "ok", "saga completed")
        elif name == "saga.compensated":
            self.line("saga", order, "undo", "saga compensated")
        elif name == "saga.compensation_failed":
            self.line("saga", order, "warn", f"compensation failed, will retry: {event.get('reason')}")

    def _step_name(self, step: object) -> str:
        if isinstance(step, int) and 0 <= step < len(self._step_names):
            return self._step_names[step]
        return f"step {step}"


def _order(order_id: str) -> str:
    return order_id if order_id in {"-", ""} or order_id.startswith("#") else f"#{order_id}"
