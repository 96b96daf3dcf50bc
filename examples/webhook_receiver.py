"""A partner's receiver for KAP webhooks: verify each request, drop repeats, check order.

Uses only the standard library and `standardwebhooks` (the Standard Webhooks reference
library); it imports nothing from the project, as a partner's code would not.

    WEBHOOK_SECRETS=whsec_... python examples/webhook_receiver.py --port 8090 --path /hooks

During a secret rotation give both secrets (comma-separated, or `--secret` twice): a
request one of them verifies is genuine. Prefer the environment: a `--secret` on the
command line is visible to every user of the machine in its process list.

Prints one line per event (type, clinic, client id, clientsequence), never a payload;
`--record FILE` also appends one JSON line per request received (see `Receiver.note`).
See docs/webhooks.md for what is delivered and how.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

MAX_BODY_BYTES = 1_000_000  # far above any KAP event; a larger body is not one


class Receiver(ThreadingHTTPServer):
    """The HTTP server and what it remembers: the webhook ids seen and each client's
    highest `clientsequence`. In memory, for the example: a real receiver keeps both
    in its database, written in the same transaction as the event's effect, so a
    crash between the two cannot make it drop or apply an event twice."""

    daemon_threads = True  # a stuck connection does not keep the process alive

    def __init__(
        self,
        address: tuple[str, int],
        secrets: Sequence[str],
        path: str,
        record: Path | None,
        echo: bool = True,
    ) -> None:
        if not secrets:
            raise ValueError("at least one signing secret (whsec_...)")
        self.verifiers = [Webhook(secret) for secret in secrets]
        self.hook_path = path
        self.record = record
        self.echo = echo  # a line per event on stdout
        self.out_of_order = 0
        self._lock = threading.Lock()  # requests are handled on threads of their own
        self._seen: set[str] = set()
        self._last: dict[tuple[str, str], int] = {}  # (clinic, client) -> highest number
        super().__init__(address, WebhookHandler)

    def verified(self, body: bytes, headers: dict[str, str]) -> bool:
        """Whether one of the secrets signed this body, id and timestamp (a timestamp
        more than 5 minutes from our clock fails too: an old request replayed by an
        attacker). Several `v1,` signatures are sent during a rotation; one is enough."""
        for verifier in self.verifiers:
            try:
                verifier.verify(body, headers, json_parse=False)
                return True
            except (WebhookVerificationError, ValueError):  # ValueError: a malformed header
                continue
        return False

    def note(self, webhook_id: str, event: dict[str, Any] | None) -> dict[str, Any]:
        """Remember a request and say what it was. `event` is None when the signature
        failed: nothing in an unverified body is trusted, or remembered."""
        entry: dict[str, Any] = {
            "webhook_id": webhook_id,
            "verified": event is not None,
            "repeat": False,
            "out_of_order": False,
            "clinicid": None,
            "subject": None,
            "clientsequence": None,
            "type": None,
        }
        with self._lock:
            if event is not None:
                entry.update({k: event.get(k) for k in ("clinicid", "subject", "type")})
                entry["clientsequence"] = event.get("clientsequence")
                # Retries and replays carry the same webhook-id: a repeat is answered 2xx
                # (or it would be sent again) and not applied again.
                entry["repeat"] = webhook_id in self._seen
                if not entry["repeat"]:
                    self._seen.add(webhook_id)
                    entry["out_of_order"] = self._out_of_order(event)
            if self.record is not None:
                with self.record.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(entry) + "\n")
        return entry

    def _out_of_order(self, event: dict[str, Any]) -> bool:
        """A new event numbered at or below the client's highest so far. Gaps are no
        fault: a subscription to some event types skips the others' numbers."""
        number = event.get("clientsequence")
        if not isinstance(number, int):
            return False
        client = (str(event.get("clinicid")), str(event.get("subject")))
        last = self._last.get(client)
        if last is not None and number <= last:
            self.out_of_order += 1
            return True
        self._last[client] = number
        return False

    def shutdown(self) -> None:
        """Stop serving and close the port."""
        super().shutdown()
        self.server_close()


class WebhookHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        if self.path != self.server.hook_path:
            self._answer(404)
            return
        size = int(self.headers.get("content-length") or 0)
        if size > MAX_BODY_BYTES:
            self._answer(413)
            return
        body = self.rfile.read(size)
        headers = {name.lower(): value for name, value in self.headers.items()}
        webhook_id = headers.get("webhook-id", "")
        if not self.server.verified(body, headers):
            self.server.note(webhook_id, None)
            print(f"rejected: bad signature (webhook-id {webhook_id!r})", flush=True)
            self._answer(401)
            return
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self._answer(400)  # signed by KAP but not an event: should never happen
            return
        entry = self.server.note(webhook_id, event)
        # Answer at once (KAP waits 10 s at most); slow work belongs on a queue of yours.
        # Here the "work" is one line: the event's coordinates, never its payload.
        marks = "".join(
            mark
            for mark, on in ((" REPEAT", entry["repeat"]), (" OUT-OF-ORDER", entry["out_of_order"]))
            if on
        )
        if self.server.echo:
            print(
                f"{entry['type']} clinic={entry['clinicid']} client={entry['subject']} "
                f"seq={entry['clientsequence']}{marks}",
                flush=True,
            )
        self._answer(200)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per event is printed above; the access log would repeat it


def serve(
    port: int,
    secrets: Sequence[str],
    record: str | Path | None = None,
    host: str = "127.0.0.1",
    *,
    path: str = "/hooks",
    echo: bool = True,
) -> ThreadingHTTPServer:
    """Start receiving on a background thread; `shutdown()` the answer to stop.
    Port 0 takes a free port (`server_address[1]` says which). `echo=False`: no line
    per event (the demo's receiver, whose record file is what it counts)."""
    server = Receiver((host, port), secrets, path, Path(record) if record else None, echo)
    threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--path", default="/hooks")
    parser.add_argument(
        "--secret", action="append", default=[], help="a signing secret (repeatable)"
    )
    parser.add_argument("--record", type=Path, help="append one JSON line per request")
    args = parser.parse_args(argv)
    from_env = [s.strip() for s in os.environ.get("WEBHOOK_SECRETS", "").split(",")]
    secrets = args.secret + [s for s in from_env if s]
    if not secrets:
        parser.error("no secret: --secret whsec_... or WEBHOOK_SECRETS=whsec_...,whsec_...")
    server = serve(args.port, secrets, args.record, args.host, path=args.path)
    print(f"receiving on http://{args.host}:{server.server_address[1]}{args.path}", flush=True)
    try:
        threading.Event().wait()  # until Ctrl-C
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
