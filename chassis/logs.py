"""JSON log lines on stdout: one object a line, no PHI (ids only)."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

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
            line["error"] = record.exc_info[0].__name__
        return json.dumps(line, ensure_ascii=False)


def configure_logging(service: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(MessageContext())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka reports every reconnect at WARNING/ERROR; keep its noise at bay.
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.WARNING))
