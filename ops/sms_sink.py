"""A local SMS provider for tests and the demo: a Twilio-style REST endpoint that records.

`POST /2010-04-01/Accounts/{sid}/Messages.json` with form fields To, From and
Body and HTTP basic auth (sid, token) answers 201 and appends one JSON line to
a file, so a test (or a person) can read exactly what was sent. Like the real
provider's test numbers, a `To` starting +1500555000 is refused with 400 (code
21211, invalid number). `fail_next` makes the next requests answer 503, to
exercise retries.

    python -m ops.sms_sink --port 8025 --log .infra/sms.jsonl
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
INVALID_PREFIX = "+1500555000"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_BODY_BYTES = 64 * 1024
# The notifier's local defaults (KAP_SMS_ACCOUNT_SID, KAP_SMS_AUTH_TOKEN): a fake's, not a secret.
LOCAL_ACCOUNT_SID = "AC-local"
LOCAL_AUTH_TOKEN = "local-token"  # noqa: S105


class SmsSink:
    """The server, its log file, and its fault switch; runs in a background thread."""

    def __init__(
        self, host: str, port: int, log_path: Path, account_sid: str, auth_token: str
    ) -> None:
        self.log_path = log_path
        self.account_sid = account_sid
        self._credentials = f"{account_sid}:{auth_token}"
        self._failures = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SmsSink:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures = count

    def _take_failure(self) -> bool:
        with self._lock:
            if self._failures <= 0:
                return False
            self._failures -= 1
            return True

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        with contextlib.suppress(ValueError):
            return base64.b64decode(header[6:]).decode() == self._credentials
        return False

    def _record(self, entry: dict[str, Any]) -> None:
        # When it was accepted (real time), so an auditor knows what may be in flight.
        with self._lock, self.log_path.open("a") as log:
            log.write(json.dumps({**entry, "received_at": time.time()}) + "\n")


def _handler_for(sink: SmsSink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            match = PATH.match(self.path)
            if match is None:
                return self._answer(404, {"code": 20404, "message": "not found"})
            if not sink._authorised(self.headers.get("Authorization")):
                return self._answer(401, {"code": 20003, "message": "authenticate"})
            if match["sid"] != sink.account_sid:
                return self._answer(404, {"code": 20404, "message": "unknown account"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                return self._answer(413, {"code": 21617, "message": "too large"})
            form = parse_qs(self.rfile.read(length).decode())
            to, sender, body = (form.get(name, [""])[0] for name in ("To", "From", "Body"))
            if sink._take_failure():
                return self._answer(503, {"code": 20503, "message": "service unavailable"})
            if not body or not sender:
                return self._answer(400, {"code": 21602, "message": "Body and From are required"})
            if not E164.match(to) or to.startswith(INVALID_PREFIX):
                return self._answer(400, {"code": 21211, "message": "invalid 'To' number"})
            sid = "SM" + uuid.uuid4().hex
            sink._record(
                {
                    "sid": sid,
                    "account_sid": match["sid"],
                    "to": to,
                    "from": sender,
                    "body": body,
                    "idempotency_key": self.headers.get("Idempotency-Key"),
                    "received_at": datetime.now(UTC).isoformat(),
                }
            )
            return self._answer(201, {"sid": sid, "status": "queued", "to": to, "from": sender})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps({**body, "status_code": status}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the record file is the log, and a request line may hold a number."""

    return Handler


def read_sms(log_path: Path) -> list[dict[str, Any]]:
    """Every message the sink accepted, oldest first."""
    if not log_path.exists():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]


def start(
    host: str,
    port: int,
    log_path: Path,
    account_sid: str = LOCAL_ACCOUNT_SID,
    auth_token: str = LOCAL_AUTH_TOKEN,
) -> SmsSink:
    return SmsSink(host, port, log_path, account_sid, auth_token).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--log", type=Path, default=Path(".infra/sms.jsonl"))
    parser.add_argument("--account-sid", default=LOCAL_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=LOCAL_AUTH_TOKEN)
    args = parser.parse_args()
    sink = start(args.host, args.port, args.log, args.account_sid, args.auth_token)
    print(f"sms provider listening on {sink.url}, messages in {args.log}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    sink.stop()


if __name__ == "__main__":
    main()
