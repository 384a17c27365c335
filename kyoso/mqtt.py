"""What every Kyoso MQTT client shares: how to reach and log in to the regional broker.

The gateway's publisher and the ingest's consumer both connect to the regional broker over
MQTT 5 with paho-mqtt 2.x, with the same options (address, login, TLS, keepalive,
persistent session, reconnect pacing). :class:`BrokerConnection` holds those options and
:func:`new_client` turns them into a configured paho client, so the two sides cannot drift.
"""

import logging
from pathlib import Path
from typing import Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import Field, SecretStr, model_validator

from kyoso.validation import ConfigModel

__all__ = ["BrokerConnection", "TlsConfig", "new_client"]


class TlsConfig(ConfigModel):
    """TLS to the broker: CA-only (server authenticated) or mutual (client certificate too)."""

    ca_file: Path | None = Field(None, description="CA file (PEM); None: the system's CAs.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM): mutual TLS.")
    key_file: Path | None = Field(None, description="Its unencrypted key; None: in cert_file.")
    check_hostname: bool = Field(True, description="Check the broker certificate's name.")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> Self:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("tls.key_file needs tls.cert_file")
        return self


class BrokerConnection(ConfigModel):
    """Where the regional broker is and how to log in; a persistent MQTT 5 session."""

    host: str = Field("localhost", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port; usually 8883 with TLS.")
    username: str | None = Field(None, description="Broker user; None: anonymous.")
    password: SecretStr | None = Field(None, description="Broker password.")
    tls: TlsConfig | None = Field(None, description="TLS settings; None: plain TCP.")
    keepalive_s: int = Field(30, ge=5, le=65535, description="MQTT keepalive.")
    session_expiry_s: int = Field(3600, ge=0, le=2**32 - 1, description="MQTT 5 session expiry.")
    reconnect_min_delay_s: int = Field(1, ge=1, description="First reconnect delay; doubles.")
    reconnect_max_delay_s: int = Field(30, ge=1, description="Longest reconnect delay.")


def new_client(
    cfg: BrokerConnection, client_id: str, logger: logging.Logger, *, manual_ack: bool = False
) -> mqtt.Client:
    """A paho MQTT 5 client set up from ``cfg``, logging to ``logger``; not yet connected."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    client.reconnect_delay_set(cfg.reconnect_min_delay_s, cfg.reconnect_max_delay_s)
    if _drop_not_connected_noise not in logger.filters:
        logger.addFilter(_drop_not_connected_noise)
    client.enable_logger(logger)
    if cfg.username is not None:
        password = cfg.password.get_secret_value() if cfg.password is not None else None
        client.username_pw_set(cfg.username, password)
    if (tls := cfg.tls) is not None:
        ca, cert, key = (
            None if f is None else str(f) for f in (tls.ca_file, tls.cert_file, tls.key_file)
        )
        client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
        client.tls_insecure_set(not tls.check_hostname)
    return client


def _drop_not_connected_noise(record: logging.LogRecord) -> bool:
    # paho 2.2 logs this at ERROR after every clean DISCONNECT and every failed reconnect
    # attempt; the clients' own connect and disconnect messages say what happened.
    return not str(record.msg).startswith("Client is not connected")
