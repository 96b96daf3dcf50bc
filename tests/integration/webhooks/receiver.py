"""A real HTTP receiver for the webhook tests: verifies every request with the
`standardwebhooks` library and records what it received and answered.

It answers as told (`mode`): 200, 500, slow (the answer after `slow_s`), 410; and it
can be taken down (the port closed) and brought back on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    webhook_id: str
    event: dict[str, Any]
    answered: int  # the status it answered (0: too slow, the sender had gone)
    signed_ok: bool


@dataclass
class Receiver:
    secrets: list[str] = field(default_factory=list)
    mode: str = "ok"  # ok | 500 | slow | 410 | hang (no answer until `released`)
    slow_s: float = 2.0
    received: list[Received] = field(default_factory=list)
    bad_signatures: int = 0
    _server: ThreadingHTTPServer | None = None
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)
    hanging: int = 0  # requests held unanswered now

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                signed_ok = receiver.verifies(body, headers)
                mode = receiver.mode
                status = {"ok": 200, "500": 500, "410": 410, "slow": 200, "hang": 0}[mode]
                if mode == "slow":
                    time.sleep(receiver.slow_s)
                if mode == "hang":
                    with receiver.lock:
                        receiver.hanging += 1
                    receiver.released.wait()
                with receiver.lock:
                    # Slow: the sender gave up before the answer; it did not count.
                    answered = 0 if mode == "slow" else status
                    receiver.received.append(
                        Received(
                            headers.get("webhook-id", ""), json.loads(body), answered, signed_ok
                        )
                    )
                    if not signed_ok:
                        receiver.bad_signatures += 1
                try:
                    self.send_response(status)
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def verifies(self, body: bytes, headers: dict[str, str]) -> bool:
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                return True
            except WebhookVerificationError:
                continue
        return False

    def delivered(self) -> list[Received]:
        """What it answered 2xx to, in the order received."""
        with self.lock:
            return [r for r in self.received if 200 <= r.answered < 300 and r.signed_ok]
