"""Kafka security settings: what each combination connects with, and which are refused
(naming the variable to fix) before anything connects."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import pytest
from pydantic import ValidationError

from chassis.config import ServiceSettings
from chassis.kafka import client_options

CA = Path(certifi.where())  # any real PEM bundle stands in for a cluster's CA file
LOGIN = {"KAFKA_SASL_USERNAME": "scheduler", "KAFKA_SASL_PASSWORD": "s3cret"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean Kafka environment to set variables in, as a deployment would."""
    for name in (
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SSL_CA_FILE",
        "KAFKA_SSL_CERT_FILE",
        "KAFKA_SSL_KEY_FILE",
        *LOGIN,
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def settings_from(env: pytest.MonkeyPatch, **variables: str) -> ServiceSettings:
    for name, value in variables.items():
        env.setenv(name, value)
    return ServiceSettings()


def refusal(env: pytest.MonkeyPatch, **variables: str) -> str:
    with pytest.raises(ValidationError) as refused:
        settings_from(env, **variables)
    return str(refused.value)


def test_nothing_set_is_plaintext_without_options(env: pytest.MonkeyPatch) -> None:
    settings = settings_from(env)
    assert settings.kafka_protocol() == "PLAINTEXT"
    assert client_options(settings) == {}


def test_a_login_alone_is_scram_512_over_plaintext_as_before(env: pytest.MonkeyPatch) -> None:
    options = client_options(settings_from(env, **LOGIN))
    assert options == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "scheduler",
        "sasl_plain_password": "s3cret",
        "ssl_context": None,
    }


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_sasl_ssl_logs_in_with_the_mechanism_over_tls_checked_against_the_ca_file(
    env: pytest.MonkeyPatch, mechanism: str
) -> None:
    options = client_options(
        settings_from(
            env,
            KAFKA_SECURITY_PROTOCOL="SASL_SSL",
            KAFKA_SASL_MECHANISM=mechanism,
            KAFKA_SSL_CA_FILE=str(CA),
            **LOGIN,
        )
    )
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == mechanism
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_tls_without_a_ca_file_trusts_the_system_cas(env: pytest.MonkeyPatch) -> None:
    options = client_options(settings_from(env, KAFKA_SECURITY_PROTOCOL="SSL"))
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert "sasl_mechanism" not in options


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({}, "KAFKA_SASL_USERNAME"),
        ({"KAFKA_SASL_USERNAME": "scheduler"}, "KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_PASSWORD": "s3cret"}, "KAFKA_SASL_USERNAME"),
    ],
)
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_a_sasl_protocol_without_its_login_names_what_is_missing(
    env: pytest.MonkeyPatch, protocol: str, given: dict[str, str], missing: str
) -> None:
    said = refusal(env, KAFKA_SECURITY_PROTOCOL=protocol, **given)
    assert f"KAFKA_SECURITY_PROTOCOL={protocol} needs {missing}" in said


def test_a_password_alone_is_not_taken_for_no_login(env: pytest.MonkeyPatch) -> None:
    assert "needs KAFKA_SASL_USERNAME" in refusal(env, KAFKA_SASL_PASSWORD="s3cret")


@pytest.mark.parametrize("protocol", ["SSL", "PLAINTEXT"])
def test_a_login_with_a_protocol_that_does_not_use_it_is_refused(
    env: pytest.MonkeyPatch, protocol: str
) -> None:
    said = refusal(env, KAFKA_SECURITY_PROTOCOL=protocol, **LOGIN)
    assert f"KAFKA_SECURITY_PROTOCOL={protocol} does not log in with SASL" in said


@pytest.mark.parametrize("variable", ["KAFKA_SSL_CA_FILE", "KAFKA_SSL_CERT_FILE"])
def test_tls_files_with_a_protocol_without_tls_are_refused(
    env: pytest.MonkeyPatch, variable: str
) -> None:
    said = refusal(env, KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", **{variable: str(CA)}, **LOGIN)
    assert f"{variable} is set but KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use TLS" in said


def test_a_key_without_its_certificate_is_refused(env: pytest.MonkeyPatch) -> None:
    said = refusal(env, KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_KEY_FILE=str(CA))
    assert "KAFKA_SSL_KEY_FILE needs KAFKA_SSL_CERT_FILE" in said


def test_a_ca_file_that_is_not_there_is_refused_by_name(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    said = refusal(env, KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CA_FILE=str(tmp_path / "no.pem"))
    assert "KAFKA_SSL_CA_FILE" in said


@pytest.mark.parametrize(
    ("variable", "value"),
    [("KAFKA_SECURITY_PROTOCOL", "TLS"), ("KAFKA_SASL_MECHANISM", "GSSAPI")],
)
def test_an_unknown_protocol_or_mechanism_is_refused_by_name(
    env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    assert variable in refusal(env, **{variable: value})
