"""A saga's step log laid out as a swimlane picture (server-rendered SVG, no script).

One lane per step (and one for the saga itself), one column per log row in
order; the line through the markers is the path the saga took, down the lanes
while running forward and back up while compensating. Colours say what
happened: sent, done, failed or timed out, compensation, operator request.
Text goes into the template, which escapes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import saga
from saga import StepLogKind

__all__ = ["Marker", "Timeline", "lay_out"]

_LEFT = 190  # room for the lane labels
_COLUMN = 86
_LANE = 52
_TOP = 34
_K = StepLogKind
_LABELS = {
    _K.STARTED: "started", _K.COMMAND_SENT: "command", _K.REPLY_RECEIVED: "reply", _K.LOCAL_DONE: "done",
    _K.FAILED: "failed", _K.TIMED_OUT: "timeout", _K.RETRIED: "retried", _K.COMPENSATING: "compensate",
    _K.COMPENSATION_SENT: "undo sent", _K.COMPENSATED: "undone", _K.COMPLETED: "completed",
    _K.SAGA_COMPENSATED: "compensated", _K.RETRY_REQUESTED: "retry asked", _K.ABORT_REQUESTED: "abort asked",
}  # fmt: skip
_TONES = {
    _K.STARTED: "send", _K.COMMAND_SENT: "send", _K.REPLY_RECEIVED: "ok", _K.LOCAL_DONE: "ok",
    _K.FAILED: "fail", _K.TIMED_OUT: "fail", _K.RETRIED: "op", _K.COMPENSATING: "undo",
    _K.COMPENSATION_SENT: "undo", _K.COMPENSATED: "undo", _K.COMPLETED: "ok", _K.SAGA_COMPENSATED: "undo",
    _K.RETRY_REQUESTED: "op", _K.ABORT_REQUESTED: "op",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Marker:
    """One log row in the picture."""

    x: int
    y: int
    tone: str
    label: str
    offset: str
    title: str


@dataclass(frozen=True, slots=True)
class Timeline:
    """The picture's geometry and text."""

    width: int
    height: int
    lanes: list[tuple[int, str]]
    markers: list[Marker]
    path: str


def _tone(entry: saga.StepLogEntry) -> str:
    if entry.kind is _K.REPLY_RECEIVED and entry.error:
        return "fail"
    return _TONES.get(entry.kind, "send")


def _title(entry: saga.StepLogEntry, name: str) -> str:
    parts = [entry.kind.value, entry.created_at.isoformat()]
    if entry.step is not None:
        parts.append(f"step {entry.step} {name} attempt {entry.attempt}")
    parts += [p for p in (entry.detail, f"error: {entry.error}" if entry.error else None) if p]
    return " | ".join(parts)


def lay_out(entries: list[saga.StepLogEntry]) -> Timeline:
    """The swimlane picture of ``entries`` (a saga's step log, oldest first)."""
    names: dict[int, str] = {}
    for e in entries:
        if e.step is not None and e.step_name:
            names.setdefault(e.step, e.step_name)
    steps = sorted({e.step for e in entries if e.step is not None})
    lane_of = {step: i + 1 for i, step in enumerate(steps)}
    lanes = [(_TOP + _LANE // 2, "saga")]
    lanes += [(_TOP + lane_of[s] * _LANE + _LANE // 2, f"{s} {names.get(s, '')}".strip()) for s in steps]
    start = entries[0].created_at if entries else None
    markers: list[Marker] = []
    for i, e in enumerate(entries):
        lane = 0 if e.step is None else lane_of[e.step]
        offset = "" if start is None else f"+{(e.created_at - start).total_seconds():.1f}s"
        label = _LABELS.get(e.kind, e.kind.value)
        if e.kind is _K.REPLY_RECEIVED:
            label = "refused" if e.error else "reply ok"
        markers.append(
            Marker(
                x=_LEFT + i * _COLUMN + _COLUMN // 2,
                y=_TOP + lane * _LANE + _LANE // 2,
                tone=_tone(e),
                label=label,
                offset=offset,
                title=_title(e, names.get(e.step, "") if e.step is not None else ""),
            )
        )
    path = " ".join(f"{'M' if i == 0 else 'L'}{m.x},{m.y}" for i, m in enumerate(markers))
    width = _LEFT + max(len(entries), 1) * _COLUMN + 20
    height = _TOP + len(lanes) * _LANE + 10
    return Timeline(width=width, height=height, lanes=lanes, markers=markers, path=path)
