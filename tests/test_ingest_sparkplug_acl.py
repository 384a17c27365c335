"""The broker's ACLs for Sparkplug: an edge node speaks only as itself in its own group, and
the ingest reads the groups, asks for rebirths and announces its STATE. Checked against a
real Mosquitto running what ``kyoso regional mosquitto`` generates."""

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import yaml
from services import Mosquitto
from test_regional_mosquitto import REGISTRY, Client

from kyoso.regional.mosquitto import write_mosquitto
from kyoso.regional.passwords import resolve_passwords
from kyoso.regional.registry import RegistryError, load_registry

NODES = [
    {"factory": "okada-machining", "group": "okada", "node": "line-1"},
    {"factory": "mori-plastics", "group": "mori", "node": "m-7", "username": "mori-edge"},
]


def _registry(tmp_path: Path, nodes: list[dict[str, str]]) -> Path:
    document = yaml.safe_load(REGISTRY.read_text())
    document["sparkplug_nodes"] = nodes
    document["ingest"]["sparkplug_host"] = "region-host"
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def broker(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> tuple[Mosquitto, Mapping[str, str]]:
    registry = load_registry(_registry(tmp_path, NODES))
    env = {"KYOSO_INGEST_PASSWORD": "ingest-pw", "KYOSO_CAPACITY_PASSWORD": "cap-pw"}
    passwords = resolve_passwords(registry, tmp_path / "secrets.yaml", env).mqtt
    out = tmp_path / "mosquitto"
    write_mosquitto(registry, passwords, out)
    broker = mosquitto_factory(
        allow_anonymous=False,
        extra_config=[f"include_dir {out / 'conf.d'}"],
        probe_username="kyoso-ingest",
        probe_password=passwords["kyoso-ingest"],
    )
    return broker, passwords


def test_the_registry_lists_edge_nodes_with_their_users(tmp_path: Path) -> None:
    registry = load_registry(_registry(tmp_path, NODES))
    assert registry.mqtt_users[-2:] == ["okada-line-1", "mori-edge"]
    assert registry.sparkplug_groups == ["mori", "okada"]
    with pytest.raises(RegistryError, match="'mori' in factories mori-plastics and okada"):
        load_registry(_registry(tmp_path, [*NODES, {**NODES[0], "group": "mori"}]))
    with pytest.raises(RegistryError, match="no broker user name: set username"):
        load_registry(_registry(tmp_path, [{**NODES[0], "node": "línea"}]))
    with pytest.raises(RegistryError, match=r"sparkplug_nodes.0.node"):
        load_registry(_registry(tmp_path, [{**NODES[0], "node": "a b"}]))


@pytest.mark.integration
def test_an_edge_node_speaks_only_in_its_group_and_the_ingest_hears_it(
    broker: tuple[Mosquitto, Mapping[str, str]],
) -> None:
    mosquitto, passwords = broker
    port = mosquitto.port
    made: list[Client] = []

    def client(user: str) -> Client:
        made.append(Client(port, user, passwords[user]))
        return made[-1]

    try:
        ingest, node = client("kyoso-ingest"), client("okada-line-1")
        assert ingest.subscribe("spBv1.0/#")
        assert node.subscribe("spBv1.0/okada/NCMD/line-1/#")
        own = [
            "spBv1.0/okada/NBIRTH/line-1",
            "spBv1.0/okada/NDATA/line-1",
            "spBv1.0/okada/DBIRTH/line-1/press",
            "spBv1.0/okada/DDATA/line-1/press",
            "spBv1.0/okada/DDEATH/line-1/press",
            "spBv1.0/okada/NDEATH/line-1",
        ]
        for topic in own:
            assert node.publish(topic) == "Success", topic
        assert ingest.publish("spBv1.0/okada/NCMD/line-1") == "Success"
        assert ingest.publish("spBv1.0/STATE/region-host", retain=True) == "Success"
        assert node.subscribe("spBv1.0/STATE/#")  # the retained STATE, as nodes watch it
        assert node.received() == ["spBv1.0/okada/NCMD/line-1", "spBv1.0/STATE/region-host"]
        # the groups only: the STATE is for the edge nodes
        assert sorted(ingest.received()) == sorted([*own, "spBv1.0/okada/NCMD/line-1"])

        refused = {"Not authorized", "dropped"}
        for topic in (
            "spBv1.0/mori/NDATA/line-1",  # another group
            "spBv1.0/okada/NDATA/line-2",  # another node of its group
            "spBv1.0/okada/NCMD/line-1",  # a command, as if from a host
            "spBv1.0/STATE/region-host",  # the host's STATE
            "kyoso/v1/okada-machining/gw-01/samples",  # the Kyoso namespace
        ):
            assert client("okada-line-1").publish(topic) in refused, topic
        for topic in ("spBv1.0/okada/NDATA/line-1", "spBv1.0/STATE/other-host"):
            assert client("kyoso-ingest").publish(topic) in refused, topic
        assert ingest.received() == []
    finally:
        for each in made:
            each.close()
