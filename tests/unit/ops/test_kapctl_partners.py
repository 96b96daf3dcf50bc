"""kapctl partners: the arguments, the requests they make of the webhook service's
admin API, what is printed and the exit code; no network (an httpx MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ops import kapctl
from shared.topics import ALL

ADMIN_KEY = "admin-key-for-kapctl-tests"
URL = "http://webhooks.test:8004"
PARTNER = {
    "id": "p-1",
    "name": "CRM",
    "url": "https://crm.example/hooks",
    "event_types": ["public.client.stage-reached.v1"],
    "clinics": ["lisbon"],
    "enabled": True,
    "disabled_reason": None,
    "secrets_valid": 1,
    "created_at": "2026-05-01T10:00:00Z",
}

Handler = Callable[[httpx.Request], httpx.Response]


class Api:
    """The service as a MockTransport: records every request, answers with `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[httpx.Request] = []
        self.handler = handler

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    @property
    def request(self) -> httpx.Request:
        assert len(self.requests) == 1
        return self.requests[0]

    def body(self) -> Any:
        return json.loads(self.request.content)


@pytest.fixture
def answer(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Api]:
    """`answer(status, json)` (or `answer(handler=...)`): kapctl's client goes to it."""
    monkeypatch.setenv("KAP_ADMIN_API_KEY", ADMIN_KEY)
    monkeypatch.setenv("KAP_WEBHOOKS_URL", URL)
    monkeypatch.setenv("USER", "ops")

    def make(status: int = 200, body: Any = None, handler: Handler | None = None) -> Api:
        api = Api(handler or (lambda _: httpx.Response(status, json=body)))
        monkeypatch.setattr(
            kapctl,
            "webhooks_client",
            lambda url: httpx.AsyncClient(base_url=url, transport=httpx.MockTransport(api)),
        )
        return api

    return make


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = kapctl.main(["partners", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_create_posts_the_partner_with_every_public_type_and_shows_its_secrets_once(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    created = {**PARTNER, "secret": "whsec_abc", "api_key": "pk_123"}
    api = answer(201, created)
    argv = ["create", "--name", "CRM", "--target", "https://crm.example/hooks"]
    code, out, err = run(capsys, *argv, "--clinics", "lisbon", "porto")

    assert code == 0
    assert api.request.method == "POST"
    assert str(api.request.url) == f"{URL}/partners"
    assert api.request.headers["X-Admin-Key"] == ADMIN_KEY
    assert api.request.headers["X-Admin-Actor"] == "kapctl:ops"
    assert api.body() == {
        "name": "CRM",
        "url": "https://crm.example/hooks",
        "event_types": [t.name for t in ALL if t.public],
        "clinics": ["lisbon", "porto"],
    }
    assert json.loads(out) == created
    assert "shown once" in err
    assert "whsec_abc" not in err


def test_create_sends_the_types_given_and_url_and_key_options_win_over_the_environment(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    api = answer(201, {**PARTNER, "secret": "s", "api_key": "k"})
    argv = ["create", "--name", "CRM", "--target", "https://crm.example/hooks"]
    argv += ["--types", "public.course.status-changed.v1", "public.client.stage-reached.v1"]
    argv += ["--clinics", "lisbon", "--url", "http://other:9000/base", "--admin-key", "k2"]
    code, _, _ = run(capsys, *argv)

    assert code == 0
    assert str(api.request.url) == "http://other:9000/base/partners"
    assert api.request.headers["X-Admin-Key"] == "k2"
    assert api.body()["event_types"] == [
        "public.course.status-changed.v1",
        "public.client.stage-reached.v1",
    ]


def test_create_needs_a_name_a_target_and_clinics(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    api = answer(201, {})
    with pytest.raises(SystemExit) as exited:
        kapctl.main(["partners", "create", "--name", "CRM", "--target", "https://x.example"])
    assert exited.value.code == 2
    assert "--clinics" in capsys.readouterr().err
    assert api.requests == []


def test_list_prints_a_json_line_per_partner_and_show_one_partner(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    other = {**PARTNER, "id": "p-2", "name": "Billing"}
    api = answer(200, [PARTNER, other])
    code, out, err = run(capsys, "list")
    assert code == 0
    assert (api.request.method, api.request.url.path) == ("GET", "/partners")
    assert [json.loads(line) for line in out.splitlines()] == [PARTNER, other]
    assert "2 partner(s)" in err

    api = answer(200, PARTNER)
    code, out, _ = run(capsys, "show", "p-1")
    assert code == 0
    assert (api.request.method, api.request.url.path) == ("GET", "/partners/p-1")
    assert json.loads(out) == PARTNER


@pytest.mark.parametrize(
    ("options", "change"),
    [
        (["--disable"], {"enabled": False}),
        (["--enable"], {"enabled": True}),
        (["--target", "https://new.example/h"], {"url": "https://new.example/h"}),
        (
            ["--types", "public.course.status-changed.v1", "--clinics", "a", "b", "--enable"],
            {
                "event_types": ["public.course.status-changed.v1"],
                "clinics": ["a", "b"],
                "enabled": True,
            },
        ),
    ],
)
def test_update_patches_only_what_is_given(
    answer: Callable[..., Api],
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    change: dict[str, Any],
) -> None:
    api = answer(200, {**PARTNER, "enabled": change.get("enabled", True)})
    code, out, _ = run(capsys, "update", "p-1", *options)
    assert code == 0
    assert (api.request.method, api.request.url.path) == ("PATCH", "/partners/p-1")
    assert api.body() == change
    assert json.loads(out)["id"] == "p-1"


def test_update_with_nothing_to_change_or_both_enable_and_disable_is_refused(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    api = answer(200, PARTNER)
    code, _, err = run(capsys, "update", "p-1")
    assert code == 2
    assert "nothing to change" in err
    with pytest.raises(SystemExit) as exited:
        kapctl.main(["partners", "update", "p-1", "--enable", "--disable"])
    assert exited.value.code == 2
    assert api.requests == []


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("24h", 86400), ("90", 90), ("15m", 900), ("7d", 604800), ("30s", 30), ("0", 0)],
)
def test_rotate_sends_how_long_the_old_secret_still_signs(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str], given: str, seconds: int
) -> None:
    rotated = {"secret": "whsec_new", "old_valid_until": "2026-05-02T10:00:00Z"}
    api = answer(200, rotated)
    code, out, err = run(capsys, "rotate", "p-1", "--keep-old-for", given)
    assert code == 0
    assert (api.request.method, api.request.url.path) == ("POST", "/partners/p-1/rotate-secret")
    assert api.body() == {"keep_old_for_s": seconds}
    assert json.loads(out) == rotated
    assert "2026-05-02T10:00:00Z" in err


def test_rotate_without_keep_old_for_leaves_the_services_default(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    api = answer(200, {"secret": "whsec_new", "old_valid_until": "2026-05-02T10:00:00Z"})
    assert run(capsys, "rotate", "p-1")[0] == 0
    assert api.body() == {}


@pytest.mark.parametrize("given", ["1.5h", "h", "24 hours", "-1", "2w"])
def test_a_duration_not_understood_is_refused_before_any_request(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str], given: str
) -> None:
    api = answer(200, {})
    with pytest.raises(SystemExit) as exited:
        kapctl.main(["partners", "rotate", "p-1", "--keep-old-for", given])
    assert exited.value.code == 2
    assert "not a duration" in capsys.readouterr().err
    assert api.requests == []


def test_replay_since_a_duration_ago_is_an_aware_instant_and_prints_the_count(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    api = answer(200, {"queued": 3})
    before = datetime.now(UTC)
    code, out, _ = run(capsys, "replay", "p-1", "--since", "2h")
    after = datetime.now(UTC)

    assert code == 0
    assert (api.request.method, api.request.url.path) == ("POST", "/partners/p-1/replay")
    body = api.body()
    assert set(body) == {"since"}
    since = datetime.fromisoformat(body["since"])
    assert before - timedelta(hours=2) <= since <= after - timedelta(hours=2)
    assert json.loads(out) == {"queued": 3}


def test_replay_between_iso_instants_reads_one_without_a_zone_as_utc(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    api = answer(200, {"queued": 0})
    argv = ["replay", "p-1", "--since", "2026-05-01T08:00:00", "--until", "2026-05-01T12:00+01:00"]
    assert run(capsys, *argv)[0] == 0
    assert api.body() == {
        "since": "2026-05-01T08:00:00+00:00",
        "until": "2026-05-01T12:00:00+01:00",
    }


def test_replay_needs_since_and_refuses_an_instant_not_understood(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    api = answer(200, {"queued": 0})
    for argv in (["replay", "p-1"], ["replay", "p-1", "--since", "yesterday"]):
        with pytest.raises(SystemExit) as exited:
            kapctl.main(["partners", *argv])
        assert exited.value.code == 2
    assert "not an ISO 8601 instant" in capsys.readouterr().err
    assert api.requests == []


def test_deliveries_send_since_and_limit_as_the_query(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"event_id": "e2", "status": "delivered"}, {"event_id": "e1", "status": "retrying"}]
    api = answer(200, rows)
    argv = ["deliveries", "p-1", "--since", "2026-05-01T00:00:00Z", "--limit", "5"]
    code, out, err = run(capsys, *argv)
    assert code == 0
    assert (api.request.method, api.request.url.path) == ("GET", "/partners/p-1/deliveries")
    assert dict(api.request.url.params) == {"since": "2026-05-01T00:00:00+00:00", "limit": "5"}
    assert [json.loads(line) for line in out.splitlines()] == rows
    assert "2 deliveries" in err

    api = answer(200, [])
    assert run(capsys, "deliveries", "p-1")[0] == 0
    assert dict(api.request.url.params) == {"limit": "100"}


def test_dead_letters_are_listed_as_json_lines(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    letters = [{"event_id": "e1", "reason": "HTTP 500"}]
    api = answer(200, letters)
    code, out, err = run(capsys, "dead-letters", "p-1")
    assert code == 0
    assert (api.request.method, api.request.url.path) == ("GET", "/partners/p-1/dead-letters")
    assert json.loads(out) == letters[0]
    assert "1 dead letter(s)" in err


def test_delete_removes_the_partner(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    api = answer(handler=lambda _: httpx.Response(204))
    code, out, _ = run(capsys, "delete", "p-1")
    assert code == 0
    assert (api.request.method, api.request.url.path) == ("DELETE", "/partners/p-1")
    assert out.strip() == "partner p-1 deleted"


@pytest.mark.parametrize(
    ("status", "body", "code", "said"),
    [
        (404, {"detail": "no partner p-1"}, 2, "no partner p-1 (HTTP 404)"),
        (403, {"detail": "not the admin key"}, 2, "not the admin key (HTTP 403)"),
        (
            422,
            {"detail": [{"loc": ["body", "url"], "msg": "Input should be a valid URL"}]},
            2,
            "url: Input should be a valid URL (HTTP 422)",
        ),
        (500, {"detail": "Internal Server Error"}, 1, "Internal Server Error (HTTP 500)"),
    ],
)
def test_an_error_answer_prints_its_detail_and_exits_2_for_4xx_and_1_for_5xx(
    answer: Callable[..., Api],
    capsys: pytest.CaptureFixture[str],
    status: int,
    body: dict[str, Any],
    code: int,
    said: str,
) -> None:
    answer(status, body)
    exited, out, err = run(capsys, "show", "p-1")
    assert exited == code
    assert out == ""
    assert err.strip() == f"kapctl: {said}"


def test_an_answer_without_json_prints_its_text(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    answer(handler=lambda _: httpx.Response(502, text="Bad Gateway from the proxy"))
    code, _, err = run(capsys, "list")
    assert code == 1
    assert "Bad Gateway from the proxy (HTTP 502)" in err


def test_a_service_not_reached_exits_1(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("All connection attempts failed", request=request)

    answer(handler=refuse)
    code, _, err = run(capsys, "list")
    assert code == 1
    assert err.strip() == f"kapctl: the webhook service at {URL}: All connection attempts failed"


def test_no_admin_key_is_refused_before_any_request(
    answer: Callable[..., Api], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = answer(200, [])
    monkeypatch.delenv("KAP_ADMIN_API_KEY")
    code, _, err = run(capsys, "list")
    assert code == 2
    assert "--admin-key" in err
    assert api.requests == []


def test_the_url_defaults_to_the_local_webhook_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAP_WEBHOOKS_URL", raising=False)
    args = kapctl.parser().parse_args(["partners", "list"])
    assert args.url == "http://127.0.0.1:8004"
    assert args.admin_key is None
