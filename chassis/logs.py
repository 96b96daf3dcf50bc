"""JSON log lines on stdout: one object a line, no PHI (ids only)."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

# Fields a log call may add with `extra=`; anything else stays out of the line so
# that a careless `extra={"email": ...}` cannot leak contact data.
CONTEXT_FIELDS = (
    "clinic_id",
    "client_id",
    "event_id",
    "correlation_id",
    "causation_id",
    "topic",
)

# The envelope of the message being handled, for every line logged meanwhile
# (set by the consuming middleware, see chassis.dead_letters).
message_context: ContextVar[dict[str, str]] = ContextVar("message_context", default={})  # noqa: B039


class MessageContext(logging.Filter):
    """Stamps each record with the ids of the message being handled, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in message_context.get().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


def context_of(headers: dict[str, str]) -> dict[str, str]:
    """Log context from CloudEvents headers: ids only, never the payload."""
    names = {
        "ce_id": "event_id",
        "ce_correlationid": "correlation_id",
        "ce_causationid": "causation_id",
        "ce_clinicid": "clinic_id",
        "ce_subject": "client_id",
    }
    return {field: headers[header] for header, field in names.items() if headers.get(header)}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = str(value)
        if record.exc_info and record.exc_info[0] is not None:
            # The type and where it was raised, never the message: messages can carry
            # values (a validation error quotes its input), and logs must hold no PHI.
            line["error"] = record.exc_info[0].__name__
            line["error_at"] = _raised_at(record.exc_info[2])
        return json.dumps(line, ensure_ascii=False)


def _raised_at(tb: TracebackType | None) -> str:
    """`file:line in function` of the deepest frame of this project's code, then of the
    library that raised, if different: enough to find the fault without the message."""
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if f.filename.startswith(_PROJECT) and "-packages/" not in f.filename]
    where = [f"{_short(f.filename)}:{f.lineno} in {f.name}" for f in ours[-1:]]
    if frames and frames[-1] not in ours[-1:]:
        last = frames[-1]
        where.append(f"{_short(last.filename)}:{last.lineno} in {last.name}")
    return " -> ".join(where)


def _short(filename: str) -> str:
    _, found, rest = filename.rpartition("-packages/")
    return rest if found else filename.removeprefix(_PROJECT)


_PROJECT = f"{Path(__file__).resolve().parents[1]}/"


def configure_logging(service: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(MessageContext())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # DEBUG is the platform's own detail (a line per published event and per sent
    # message, with their ids): libraries stay at INFO, their DEBUG is a flood.
    wanted = logging.getLevelName(level.upper())
    root.setLevel(max(wanted, logging.INFO) if isinstance(wanted, int) else level.upper())
    for ours in ("chassis", "services", "ops"):
        logging.getLogger(ours).setLevel(level.upper())
    # aiokafka reports every reconnect at WARNING/ERROR; keep its noise at bay.
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.WARNING))
