"""kapctl partners against the real webhook service (on real Redis and Kafka): create,
list (never a secret), rotate, disable, delete, and the API's refusals as exit codes.

kapctl's requests go through the app's own ASGI client (`partners(args, client)`),
as they would go to --url.
"""

from __future__ import annotations

import json

import httpx
import pytest

from ops import kapctl
from tests.integration.webhooks.test_delivery import (  # noqa: F401
    ADMIN_KEY,
    clinic_ids,
    settings,
    webhooks,
)

pytestmark = pytest.mark.integration
TARGET = "http://127.0.0.1:9/hooks"  # loopback is allowed in these settings


async def kapctl_partners(
    client: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
    admin_key: str = ADMIN_KEY,
) -> tuple[int, str, str]:
    args = kapctl.parser().parse_args(["partners", *argv, "--admin-key", admin_key])
    code = await kapctl.partners(args, client)
    out, err = capsys.readouterr()
    return code, out, err


async def test_a_partner_is_created_listed_rotated_disabled_and_deleted_with_kapctl(
    webhooks: httpx.AsyncClient,  # noqa: F811
    clinic_ids: tuple[str, str],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    clinic, _ = clinic_ids
    argv = ["create", "--name", "CRM", "--target", TARGET, "--clinics", clinic]
    code, out, err = await kapctl_partners(webhooks, capsys, *argv)
    assert code == 0, err
    created = json.loads(out)
    partner_id, secret = created["id"], created["secret"]
    assert secret.startswith("whsec_")
    assert created["api_key"]
    assert created["url"] == TARGET
    assert created["clinics"] == [clinic]
    assert created["event_types"] == sorted(kapctl.PUBLIC_TYPES)
    assert created["enabled"] is True
    assert "shown once" in err

    code, out, err = await kapctl_partners(webhooks, capsys, "list")
    assert code == 0, err
    listed = {p["id"]: p for p in map(json.loads, out.splitlines())}
    assert listed[partner_id]["name"] == "CRM"
    assert "secret" not in listed[partner_id]
    assert "api_key" not in listed[partner_id]
    assert secret not in out
    assert created["api_key"] not in out

    code, out, err = await kapctl_partners(
        webhooks, capsys, "rotate", partner_id, "--keep-old-for", "1h"
    )
    assert code == 0, err
    rotated = json.loads(out)
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != secret
    code, out, _ = await kapctl_partners(webhooks, capsys, "show", partner_id)
    assert json.loads(out)["secrets_valid"] == 2  # the old one still signs, for an hour

    code, out, err = await kapctl_partners(webhooks, capsys, "update", partner_id, "--disable")
    assert code == 0, err
    assert json.loads(out)["enabled"] is False
    code, out, _ = await kapctl_partners(webhooks, capsys, "show", partner_id)
    assert code == 0
    assert json.loads(out)["enabled"] is False

    code, out, err = await kapctl_partners(webhooks, capsys, "deliveries", partner_id)
    assert (code, out) == (0, "")
    code, out, err = await kapctl_partners(webhooks, capsys, "dead-letters", partner_id)
    assert (code, out) == (0, "")

    code, out, err = await kapctl_partners(webhooks, capsys, "delete", partner_id)
    assert code == 0, err
    assert out.strip() == f"partner {partner_id} deleted"
    code, out, _ = await kapctl_partners(webhooks, capsys, "list")
    assert partner_id not in out
    code, out, err = await kapctl_partners(webhooks, capsys, "show", partner_id)
    assert (code, out) == (2, "")
    assert err.strip() == f"kapctl: no partner {partner_id} (HTTP 404)"


async def test_the_services_refusals_are_printed_and_exit_2(
    webhooks: httpx.AsyncClient,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["create", "--name", "CRM", "--target", TARGET, "--clinics", "no-such-clinic"]
    code, out, err = await kapctl_partners(webhooks, capsys, *argv)
    assert (code, out) == (2, "")
    assert "clinics: unknown clinic(s) no-such-clinic (HTTP 422)" in err

    code, out, err = await kapctl_partners(webhooks, capsys, "list", admin_key="not-the-key")
    assert (code, out) == (2, "")
    assert err.strip() == "kapctl: not the admin key (HTTP 403)"
