"""How every Lapse Kafka client, the admin tooling included, proves who it is and checks
who the broker is: one translation of KafkaSettings for FastStream and for raw aiokafka."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLScram256, SASLScram512

from lapse_common.settings import KafkaSettings

logger = logging.getLogger(__name__)


class KafkaSecurityMisconfigured(ValueError):
    """The LAPSE_KAFKA_* security settings cannot authenticate this client."""


def broker_security(settings: KafkaSettings) -> BaseSecurity | None:
    """The FastStream security object for `settings`; None only for allowed PLAINTEXT."""
    if settings.security_protocol == "PLAINTEXT":
        if not settings.allow_plaintext:
            raise KafkaSecurityMisconfigured(
                "LAPSE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT has no authentication: anyone who "
                "reaches the broker can read and forge every message. Use SASL_SSL or SSL; "
                "for a local experiment only, also set LAPSE_KAFKA_ALLOW_PLAINTEXT=true"
            )
        logger.warning(
            "KAFKA WITHOUT AUTHENTICATION OR ENCRYPTION (LAPSE_KAFKA_ALLOW_PLAINTEXT=true): "
            "anyone who reaches %s can read and forge grants and revocations; never run "
            "this outside a local experiment",
            settings.bootstrap_servers,
        )
        return None
    context = _tls_context(settings)
    if settings.security_protocol == "SSL":
        if settings.ssl_certfile is None or settings.ssl_keyfile is None:
            raise KafkaSecurityMisconfigured(
                "LAPSE_KAFKA_SECURITY_PROTOCOL=SSL authenticates with a client certificate: "
                "set LAPSE_KAFKA_SSL_CERTFILE and LAPSE_KAFKA_SSL_KEYFILE"
            )
        return BaseSecurity(ssl_context=context, use_ssl=True)
    if not settings.username:
        raise KafkaSecurityMisconfigured(
            "LAPSE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs LAPSE_KAFKA_USERNAME and "
            "LAPSE_KAFKA_PASSWORD_FILE (the principal the admin set-up created for this process)"
        )
    password = _read_secret(settings.password_file, "LAPSE_KAFKA_PASSWORD_FILE")
    scram = SASLScram512 if settings.sasl_mechanism == "SCRAM-SHA-512" else SASLScram256
    return scram(username=settings.username, password=password, ssl_context=context)


def aiokafka_security_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer/Consumer/AdminClient: the same security
    FastStream uses, so no client of Lapse's connects differently from the others."""
    return parse_security(broker_security(settings))


def _tls_context(settings: KafkaSettings) -> ssl.SSLContext:
    cafile = settings.ssl_cafile
    if cafile is not None and not cafile.is_file():
        raise KafkaSecurityMisconfigured(f"LAPSE_KAFKA_SSL_CAFILE: no file at {cafile}")
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if settings.ssl_certfile is not None:
        for name, path in (
            ("LAPSE_KAFKA_SSL_CERTFILE", settings.ssl_certfile),
            ("LAPSE_KAFKA_SSL_KEYFILE", settings.ssl_keyfile),
        ):
            if path is None or not path.is_file():
                raise KafkaSecurityMisconfigured(f"{name}: no file at {path}")
        context.load_cert_chain(
            str(settings.ssl_certfile), str(settings.ssl_keyfile) if settings.ssl_keyfile else None
        )
    return context


def _read_secret(path: Path | None, variable: str) -> str:
    if path is None:
        raise KafkaSecurityMisconfigured(f"{variable} is not set")
    try:
        secret = path.read_text().strip()
    except OSError as error:
        raise KafkaSecurityMisconfigured(
            f"{variable}: cannot read {path}: {error.strerror or error}"
        ) from error
    if not secret:
        raise KafkaSecurityMisconfigured(f"{variable}: {path} is empty")
    return secret
