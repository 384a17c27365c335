"""The broker's access control generated from the gateway registry: the password file in
Mosquitto's own format, the ACLs, the secrets kept across runs, and a real Mosquitto started
with what `kyoso regional mosquitto` generates for the compose stack, proving that a gateway
publishes and reads only inside its factory and that the ingest reads every factory."""

import base64
import queue
import shutil
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from examples import documented_defaults, uncommented_lines
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from services import LOOPBACK, Mosquitto, find_binary, free_port, mqtt_connack
from test_compose import listener_options
from test_gateway_publisher import _make_certificates

from kyoso.cli import main
from kyoso.regional.mosquitto import TlsFiles, hash_password, write_mosquitto
from kyoso.regional.passwords import PasswordError, resolve_passwords
from kyoso.regional.registry import Registry, RegistryError, load_registry

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "deploy" / "gateways.example.yaml"
ENV = {"KYOSO_INGEST_PASSWORD": "ingest-secret-from-env", "KYOSO_CAPACITY_PASSWORD": "cap-secret"}
WAIT = 10.0


# --- the files ------------------------------------------------------------------------------


def test_password_hash_is_the_one_mosquitto_passwd_writes(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    tool = find_binary("mosquitto_passwd", "mosquitto")
    subprocess.run([tool, "-c", "-b", str(passwd), "alice", "s3cr:t $7$ ü"], check=True)
    user, stored = passwd.read_text().strip().split(":", 1)
    _, kind, iterations, salt, _ = stored.split("$")
    assert (user, kind) == ("alice", "7")
    again = hash_password("s3cr:t $7$ ü", salt=base64.b64decode(salt), iterations=int(iterations))
    assert again == stored
    assert hash_password("x") != hash_password("x")  # a fresh salt every time


def test_passwords_come_from_the_environment_or_are_generated_once(tmp_path: Path) -> None:
    registry = load_registry(REGISTRY)
    secrets_file = tmp_path / "secrets" / "passwords.yaml"
    first = resolve_passwords(registry, secrets_file, ENV)
    assert (
        first.mqtt["kyoso-ingest"] == first.influxdb["kyoso-ingest"] == ENV["KYOSO_INGEST_PASSWORD"]
    )
    assert first.influxdb["kyoso-capacity"] == ENV["KYOSO_CAPACITY_PASSWORD"]
    generated = [first.mqtt["okada-machining-gw-01"], first.influxdb["mori-plastics"]]
    assert all(len(p) == 32 for p in generated)
    assert len(set(generated)) == 2
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    stored = yaml.safe_load(secrets_file.read_text())
    assert "kyoso-ingest" not in stored["mqtt"]  # the environment's are never written
    # Again, even with another registry order: nothing changes, nothing is rewritten.
    before = secrets_file.stat().st_mtime_ns
    assert resolve_passwords(registry, secrets_file, ENV) == first
    assert secrets_file.stat().st_mtime_ns == before
    with pytest.raises(PasswordError, match="KYOSO_CAPACITY_PASSWORD"):
        resolve_passwords(registry, secrets_file, {**ENV, "KYOSO_CAPACITY_PASSWORD": ""})
    with pytest.raises(PasswordError, match="KYOSO_INGEST_PASSWORD"):
        resolve_passwords(registry, secrets_file, {"KYOSO_CAPACITY_PASSWORD": "x"})


def test_a_new_gateway_gets_a_password_and_the_others_keep_theirs(tmp_path: Path) -> None:
    secrets_file = tmp_path / "passwords.yaml"
    first = resolve_passwords(load_registry(REGISTRY), secrets_file, ENV)
    grown = yaml.safe_load(REGISTRY.read_text())
    grown["gateways"].append({"factory": "okada-machining", "gateway": "gw-02"})
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(grown))
    second = resolve_passwords(load_registry(tmp_path / "registry.yaml"), secrets_file, ENV)
    assert {k: second.mqtt[k] for k in first.mqtt} == first.mqtt
    assert second.mqtt["okada-machining-gw-02"] not in first.mqtt.values()


def test_example_registry_documents_every_option_and_its_default() -> None:
    assert uncommented_lines(REGISTRY.read_text()) == []
    defaults = Registry.model_fields
    for section in ("ingest", "capacity", "region"):
        account = defaults[section].default
        documented = documented_defaults(REGISTRY, section)
        # `ingest.workers` (default 1) is not in the example yet: checked once it is.
        defaults_of = account.model_dump()
        assert {"username", "password_env"} <= documented.keys() <= defaults_of.keys()
        assert documented == {key: defaults_of[key] for key in documented}, section


_GATEWAY = {"factory": "a", "gateway": "g"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gateways": [{"factory": "a", "gateway": "g"}] * 2}, "gateways listed twice"),
        ({"gateways": [{"factory": "capacity", "gateway": "g"}]}, "reserved"),
        ({"gateways": [{"factory": "f" * 41, "gateway": "g"}]}, "Grafana data source uid"),
        (
            {"gateways": [{"factory": "a", "gateway": "g", "username": "kyoso-ingest"}]},
            "broker user names used twice",
        ),
        ({"gateways": [{"factory": "kyoso-region", "gateway": "g"}]}, "InfluxDB user names"),
        (
            {
                "ingest": {"username": "kyoso-ingest", "workers": 2},
                "gateways": [{"factory": "a", "gateway": "g", "username": "kyoso-ingest-2"}],
            },
            "broker user names used twice",
        ),
        (
            {"ingest": {"username": "i" * 63, "workers": 2}, "gateways": [_GATEWAY]},
            "longer than 64",
        ),
        ({"ingest": {"username": "i", "workers": 0}, "gateways": [_GATEWAY]}, "ingest.workers"),
        ({"ingest": {"username": "i", "workers": 65}, "gateways": [_GATEWAY]}, "ingest.workers"),
        (
            {"gateways": [{"factory": "a", "gateway": "g", "username": "a:b"}]},
            "gateways.0.username",
        ),
        ({"gateways": [{"factory": "A", "gateway": "g"}]}, "gateways.0.factory"),
        ({"gateways": []}, "gateways"),
        ({"gateways": [{"factory": "a", "gateway": "g"}], "extra": 1}, "extra"),
    ],
)
def test_registry_errors_name_the_problem(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(change))
    with pytest.raises(RegistryError, match=message):
        load_registry(path)


def test_generated_files(tmp_path: Path) -> None:
    registry = load_registry(REGISTRY)
    passwords = resolve_passwords(registry, tmp_path / "passwords.yaml", ENV)
    tls = TlsFiles(Path("/etc/kyoso/tls/server.crt"), Path("/etc/kyoso/tls/server.key"))
    out = tmp_path / "mosquitto"
    written = write_mosquitto(registry, passwords.mqtt, out, tls)
    assert written == [out / "passwd", out / "acl", out / "conf.d" / "kyoso.conf"]
    assert (out / "passwd").stat().st_mode & 0o777 == 0o600
    users = [line.split(":", 1)[0] for line in (out / "passwd").read_text().splitlines()]
    assert users == registry.mqtt_users
    acl = (out / "acl").read_text()
    assert "user okada-machining-gw-01\ntopic write kyoso/v1/okada-machining/gw-01/#\n" in acl
    assert "topic read kyoso/v1/okada-machining/#" in acl
    assert "user kyoso-ingest\ntopic read kyoso/v1/#\n" in acl
    assert "write kyoso/v1/#" not in acl
    assert "readwrite" not in acl
    conf = (out / "conf.d" / "kyoso.conf").read_text().splitlines()
    assert "allow_anonymous false" in conf
    assert f"password_file {out / 'passwd'}" in conf
    assert f"acl_file {out / 'acl'}" in conf
    assert "certfile /etc/kyoso/tls/server.crt" in conf
    assert "require_certificate true" not in conf  # no ca.crt: server authentication only
    # The TLS listener takes the user name as the client id; nothing before it is a listener
    # option (Mosquitto would open a default listener on 1883 for it).
    assert listener_options("\n".join(conf)) == {
        "8883": ["use_username_as_clientid true", "certfile", "keyfile", "tls_version"]
    }


def test_each_ingest_worker_has_a_broker_account_of_its_own(tmp_path: Path) -> None:
    document = yaml.safe_load(REGISTRY.read_text())
    document["ingest"]["workers"] = 3
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(document))
    registry = load_registry(tmp_path / "registry.yaml")
    workers = ["kyoso-ingest", "kyoso-ingest-2", "kyoso-ingest-3"]
    assert registry.mqtt_users[:4] == [*workers, "okada-machining-gw-01"]
    assert registry.influx_users.count("kyoso-ingest") == 1  # one InfluxDB user for all
    assert not any(user.startswith("kyoso-ingest-") for user in registry.influx_users)
    # The ingest names its password's variable: every worker's broker account takes it.
    passwords = resolve_passwords(registry, tmp_path / "passwords.yaml", ENV).mqtt
    assert {passwords[w] for w in workers} == {ENV["KYOSO_INGEST_PASSWORD"]}
    write_mosquitto(registry, passwords, tmp_path / "mosquitto")
    acl = (tmp_path / "mosquitto" / "acl").read_text()
    for worker in workers:
        assert f"user {worker}\ntopic read kyoso/v1/#\n" in acl
    assert "write kyoso/v1/#" not in acl
    # Without a variable, each worker gets a generated password of its own.
    document["ingest"]["password_env"] = None
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(document))
    registry = load_registry(tmp_path / "registry.yaml")
    generated = resolve_passwords(registry, tmp_path / "generated.yaml", ENV).mqtt
    assert len({generated[w] for w in workers}) == 3
    stored = yaml.safe_load((tmp_path / "generated.yaml").read_text())["mqtt"]
    assert {w: stored[w] for w in workers} == {w: generated[w] for w in workers}


# --- the real broker ------------------------------------------------------------------------


_DROPPED = "\0dropped"
"""Put into a client's message queue when the broker closes its connection."""


class Client:
    """An MQTT 5 client with a login, recording CONNACK, SUBACK and PUBACK reason codes and,
    in order, the topics delivered to it. ``client_id`` None: a random one; a persistent
    session with ``clean_start=False`` and ``session_expiry_s`` > 0."""

    def __init__(
        self,
        port: int,
        username: str,
        password: str,
        *,
        tls: Path | None = None,
        client_id: str | None = None,
        clean_start: bool = True,
        session_expiry_s: int = 0,
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"kyoso-acl-{uuid.uuid4().hex[:10]}",
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
        )
        self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls), cert_reqs=ssl.CERT_REQUIRED)
        self.messages: queue.Queue[str] = queue.Queue()
        self._acks: dict[int, list[ReasonCode]] = {}
        self._done = threading.Condition()
        self._connack: queue.Queue[tuple[ReasonCode, bool]] = queue.Queue()
        self.dropped = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self._connack.put((rc, f.session_present))
        self.client.on_disconnect = lambda c, u, f, rc, p: self._dropped()
        self.client.on_message = lambda c, u, m: self.messages.put(m.topic)
        self.client.on_subscribe = self._acked
        self.client.on_publish = lambda c, u, mid, rc, p: self._acked(c, u, mid, [rc], p)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = session_expiry_s
        self.client.connect(
            LOOPBACK, port, keepalive=10, clean_start=clean_start, properties=properties
        )
        self.client.loop_start()
        self.connack, self.session_present = self._connack.get(timeout=WAIT)

    def _dropped(self) -> None:
        with self._done:
            self.dropped.set()
            self.messages.put(_DROPPED)
            self._done.notify_all()

    def _acked(
        self,
        client: Any,
        userdata: Any,
        mid: int,
        codes: list[ReasonCode],
        props: Properties | None,
    ) -> None:
        with self._done:
            self._acks[mid] = codes
            self._done.notify_all()

    def _wait(self, mid: int) -> list[ReasonCode] | None:
        """The acknowledgement's reason codes; None if the broker dropped the connection."""
        with self._done:
            done = self._done.wait_for(lambda: mid in self._acks or self.dropped.is_set(), WAIT)
            assert done, f"neither an acknowledgement of {mid} nor a disconnect"
            return self._acks.pop(mid, None)

    def subscribe(self, topic: str) -> bool:
        """True when the broker granted the subscription (QoS 1)."""
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        codes = self._wait(mid)
        assert codes is not None, "the broker dropped the connection"
        return not codes[0].is_failure

    def publish(self, topic: str, payload: bytes = b"x", *, retain: bool = False) -> str:
        """The PUBACK's reason, e.g. 'Success' or 'Not authorized'; 'dropped' when the
        broker closed the connection instead (Mosquitto 2.0.11 answers a refused publish
        with PUBACK 0x87 and then drops the connection, or drops it at once)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        codes = self._wait(info.mid)
        return "dropped" if codes is None else str(codes[0])

    def received(self, timeout: float = 1.0) -> list[str]:
        """Topics delivered within ``timeout`` seconds."""
        topics = []
        try:
            while True:
                topics.append(self.messages.get(timeout=timeout))
        except queue.Empty:
            return [topic for topic in topics if topic != _DROPPED]

    def until(self, marker: str) -> list[str]:
        """The topics delivered up to and including ``marker``, which the test publishes once
        whatever it looks for would have been delivered before it (the broker sends a
        client's messages in order): so the list is everything that was. Ends early, without
        ``marker``, if the broker closes the connection."""
        topics: list[str] = []
        while marker not in topics:
            try:
                topic = self.messages.get(timeout=WAIT)
            except queue.Empty:
                pytest.fail(f"neither {marker} nor a disconnect within {WAIT} s; got {topics}")
            if topic == _DROPPED:
                break
            topics.append(topic)
        return topics

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def tls_listener(tmp_path: Path) -> tuple[TlsFiles, Path]:
    """A TLS listener on a free loopback port, as `--tls-dir` finds it (server.crt and
    server.key, no ca.crt: no client certificates); and the CA file a client trusts."""
    certificates, tls_dir = tmp_path / "certificates", tmp_path / "tls"
    certificates.mkdir()
    tls_dir.mkdir()
    _make_certificates(certificates)
    shutil.copy(certificates / "server.pem", tls_dir / "server.crt")
    shutil.copy(certificates / "server.key", tls_dir / "server.key")
    tls = TlsFiles.from_dir(tls_dir, port=free_port(), host=LOOPBACK)
    assert tls is not None
    return tls, certificates / "ca.pem"


@pytest.fixture
def generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    """What `kyoso regional mosquitto` writes for the compose stack's registry, and the
    broker passwords."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    out, secrets_file = tmp_path / "mosquitto", tmp_path / "secrets" / "passwords.yaml"
    code = main(
        [
            "regional",
            "mosquitto",
            "--registry",
            str(REGISTRY),
            "--secrets",
            str(secrets_file),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    stored = yaml.safe_load(secrets_file.read_text())["mqtt"]
    return out, {**stored, "kyoso-ingest": ENV["KYOSO_INGEST_PASSWORD"]}


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(port: int, username: str, password: str, **kwargs: Any) -> Client:
        client = Client(port, username, password, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.mark.integration
def test_gateways_are_confined_to_their_factory_and_the_ingest_reads_all(
    mosquitto_factory: Callable[..., Mosquitto],
    generated: tuple[Path, dict[str, str]],
    clients: Callable[..., Client],
) -> None:
    out, passwords = generated
    broker = mosquitto_factory(
        allow_anonymous=False,
        extra_config=[f"include_dir {out / 'conf.d'}"],
        probe_username="kyoso-ingest",
        probe_password=passwords["kyoso-ingest"],
    )
    port = broker.port
    # No login, a wrong password, an unknown user: refused.
    assert mqtt_connack(LOOPBACK, port).is_failure  # type: ignore[union-attr]
    wrong = mqtt_connack(LOOPBACK, port, username="okada-machining-gw-01", password="nope")  # noqa: S106
    assert wrong is not None
    assert wrong.is_failure
    unknown = mqtt_connack(LOOPBACK, port, username="intruder", password="x")  # noqa: S106
    assert unknown is not None
    assert unknown.is_failure

    ingest = clients(port, "kyoso-ingest", passwords["kyoso-ingest"])
    okada = clients(port, "okada-machining-gw-01", passwords["okada-machining-gw-01"])
    mori = clients(port, "mori-plastics-gw-01", passwords["mori-plastics-gw-01"])
    assert not ingest.connack.is_failure
    assert not okada.connack.is_failure
    assert ingest.subscribe("kyoso/v1/#")
    assert ingest.subscribe("$share/ingest/kyoso/v1/+/+/samples")  # shared subscriptions too

    # Inside its own subtree a gateway publishes, and the ingest reads every factory.
    own = "kyoso/v1/okada-machining/gw-01/samples"
    assert okada.publish(own) == "Success"
    assert okada.publish("kyoso/v1/okada-machining/gw-01/machines/cnc-01") == "Success"
    assert mori.publish("kyoso/v1/mori-plastics/gw-01/status") == "Success"
    assert sorted(ingest.received()) == sorted(
        [
            own,
            own,
            "kyoso/v1/okada-machining/gw-01/machines/cnc-01",
            "kyoso/v1/mori-plastics/gw-01/status",
        ]
    )  # once through the plain and once through the shared subscription, for samples

    # Outside: another factory, another gateway of its own factory, outside the namespace.
    # Each attempt on a connection of its own, as the broker drops it.
    refused = {"Not authorized", "dropped"}
    for topic in (
        "kyoso/v1/mori-plastics/gw-01/samples",
        "kyoso/v1/okada-machining/gw-02/samples",
        "kyoso/v2/okada-machining/gw-01/samples",
        "elsewhere",
    ):
        attempt = clients(port, "okada-machining-gw-01", passwords["okada-machining-gw-01"])
        assert attempt.publish(topic) in refused, topic
    assert ingest.received() == []  # nothing of it was delivered

    # Reading: Mosquitto 2.0 grants every subscription and checks the ACL on each message it
    # would deliver, so a gateway subscribed to the whole region gets its own factory only.
    for pattern in ("kyoso/v1/#", "kyoso/v1/mori-plastics/#", "kyoso/v1/+/gw-01/samples"):
        assert okada.subscribe(pattern)
    assert mori.publish("kyoso/v1/mori-plastics/gw-01/samples") == "Success"
    assert okada.publish(own) == "Success"
    assert set(okada.received()) == {own}
    ingest.received()

    # The ingest publishes nothing.
    for topic in ("kyoso/v1/okada-machining/gw-01/samples", "kyoso/v1/anything"):
        attempt = clients(port, "kyoso-ingest", passwords["kyoso-ingest"])
        assert attempt.publish(topic) in refused, topic
    assert okada.received() == []


@pytest.mark.integration
def test_tls_listener_takes_the_same_logins(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path, clients: Callable[..., Client]
) -> None:
    tls, ca = tls_listener(tmp_path)
    assert tls.ca is None
    registry = load_registry(REGISTRY)
    passwords = resolve_passwords(registry, tmp_path / "passwords.yaml", ENV).mqtt
    out = tmp_path / "mosquitto"
    write_mosquitto(registry, passwords, out, tls)
    ingest_password = passwords["kyoso-ingest"]
    broker = mosquitto_factory(
        allow_anonymous=False,
        extra_config=[f"include_dir {out / 'conf.d'}"],
        probe_username="kyoso-ingest",
        probe_password=ingest_password,
    )
    assert broker.running
    gateway = clients(tls.port, "okada-machining-gw-01", passwords["okada-machining-gw-01"], tls=ca)
    assert not gateway.connack.is_failure
    # Accepted: no one reads it here, so the PUBACK says so, without an error.
    assert gateway.publish("kyoso/v1/okada-machining/gw-01/samples") == "No matching subscribers"
    assert gateway.publish("kyoso/v1/mori-plastics/gw-01/samples") in {"Not authorized", "dropped"}
    refused = clients(tls.port, "okada-machining-gw-01", "wrong", tls=ca)
    assert refused.connack.is_failure
