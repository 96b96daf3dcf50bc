"""Kafka over TLS, as a managed cluster is reached: the local broker of `KAFKA_TLS=1
infra/kafka.sh` (its own CA and certificate), one listener TLS only and one SASL_SSL.
For each protocol and login, an event the chassis's broker publishes (built from
ServiceSettings) is read back by kapctl with the same settings from its environment;
a client without the CA file and a wrong password are refused, saying why."""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from chassis.config import ServiceSettings
from chassis.kafka import apply_topics, client_options
from ops import kapctl
from shared.topics import PUBLIC_STAGE_REACHED
from tests import infra
from tests.helpers import publish_stage_reached

pytestmark = pytest.mark.integration

PORT = 19200  # SSL; SASL_SSL on 19201, controller 19202
USER = "kap"
PASSWORD = secrets.token_hex(12)  # not the script's default: proves it is the one given


@pytest.fixture(scope="module")
def tls() -> Iterator[infra.TlsKafka]:
    if shutil.which("java") is None or shutil.which("openssl") is None:
        pytest.skip("the local TLS broker needs Java 17+ and openssl")
    with infra.tls_kafka(PORT, USER, PASSWORD) as running:
        yield running


def environment(tls: infra.TlsKafka, protocol: str, mechanism: str | None) -> dict[str, str]:
    """The variables a deployment sets for this protocol and login (mTLS: "client-cert")."""
    env = {"KAFKA_SECURITY_PROTOCOL": protocol, "KAFKA_SSL_CA_FILE": str(tls.ca_file)}
    if mechanism == "client-cert":
        certs = tls.ca_file.parent
        env |= {
            "KAFKA_SSL_CERT_FILE": str(certs / "client.pem"),
            "KAFKA_SSL_KEY_FILE": str(certs / "client.key"),
        }
    if protocol == "SSL":
        return {**env, "KAFKA_BOOTSTRAP_SERVERS": tls.ssl_bootstrap}
    return {
        **env,
        "KAFKA_BOOTSTRAP_SERVERS": tls.sasl_ssl_bootstrap,
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": tls.user,
        "KAFKA_SASL_PASSWORD": tls.password,
    }


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("SSL", None),
        # mTLS: the broker verifies a certificate offered (ssl.client.auth=requested),
        # so this one is presented and checked against the CA.
        ("SSL", "client-cert"),
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SASL_SSL", "PLAIN"),
    ],
)
def test_an_event_published_by_the_chassis_is_read_back_by_kapctl_with_the_same_settings(
    tls: infra.TlsKafka,
    protocol: str,
    mechanism: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in environment(tls, protocol, mechanism).items():
        monkeypatch.setenv(name, value)
    # kapctl creates the topics (the first case) as an admin client built from the settings.
    assert kapctl.main(["topics", "apply"]) == 0
    client_id = asyncio.run(publish_stage_reached(ServiceSettings()))

    assert kapctl.main(["timeline", str(client_id)]) == 0

    assert PUBLIC_STAGE_REACHED.name in capsys.readouterr().out


async def refusal(settings: ServiceSettings, caplog: pytest.LogCaptureFixture) -> str:
    """What the log says when a service starting with `settings` is refused."""
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        await apply_topics(
            settings.kafka_bootstrap_servers, topics=[], security=client_options(settings)
        )
    return caplog.text


async def test_a_client_without_the_ca_file_is_refused_as_unverified(
    tls: infra.TlsKafka, caplog: pytest.LogCaptureFixture
) -> None:
    # No CA file: the system's CAs, which never signed the local broker's certificate.
    settings = ServiceSettings(
        kafka_bootstrap_servers=tls.ssl_bootstrap, kafka_security_protocol="SSL"
    )
    assert "CERTIFICATE_VERIFY_FAILED" in await refusal(settings, caplog)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
async def test_a_wrong_password_is_refused_as_invalid_credentials(
    tls: infra.TlsKafka, mechanism: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ServiceSettings(
        kafka_bootstrap_servers=tls.sasl_ssl_bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_ssl_ca_file=tls.ca_file,
        kafka_sasl_username=tls.user,
        kafka_sasl_password="not-" + tls.password,
    )
    said = await refusal(settings, caplog)
    assert "SaslAuthenticationFailed" in said
    # SCRAM: "due to invalid credentials"; PLAIN: "Invalid username or password".
    assert "invalid" in said.lower()
