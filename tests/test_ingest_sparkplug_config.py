"""The ``sparkplug:`` block of the ingest's settings: the example, and errors with their
location in the file; and what the host does with a group no factory owns."""

from pathlib import Path

import pytest
import yaml
from examples import documented_defaults
from pydantic import BaseModel
from test_ingest_sparkplug import Clock, machine_mapping, sparkplug_config

from kyoso import sparkplug as spb
from kyoso.ingest.config import IngestConfigError, load_settings
from kyoso.ingest.consumer import Incoming, classify
from kyoso.ingest.sparkplug import SparkplugHost
from kyoso.ingest.sparkplug_config import SparkplugConfig, SparkplugNodeConfig, gateway_of_node
from kyoso.sparkplug import sparkplug_b_pb2 as pb

EXAMPLE = Path(__file__).resolve().parent.parent / "kyoso" / "ingest" / "ingest.example.yaml"


def _block() -> dict[str, object]:
    """The example's sparkplug block, as a dict to spoil."""
    block = yaml.safe_load(EXAMPLE.read_text())["sparkplug"]
    assert isinstance(block, dict)
    return block


def _load(tmp_path: Path, block: dict[str, object]) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text(yaml.safe_dump({"sparkplug": block}, sort_keys=False))
    load_settings(path)


def test_the_example_maps_a_node_to_a_gateway_and_documents_the_defaults() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.sparkplug is not None
    [factory] = settings.sparkplug.factories
    [node] = factory.nodes
    assert (factory.factory, node.node, node.gateway_id) == (
        "tanaka-seiki",
        "Press Line 1",
        "press-line-1",
    )
    assert node.machines[0].metrics["Status/Code"] == "state_code"
    documented = documented_defaults(EXAMPLE, "sparkplug")
    assert documented
    for key, value in documented.items():
        assert value == _default(SparkplugConfig, key), key


def _default(model: type[BaseModel], key: str) -> object:
    return model.model_fields[key].get_default(call_default_factory=True)


@pytest.mark.parametrize(
    ("node", "gateway"),
    [("Press Line 1", "press-line-1"), ("EN_07", "en_07"), ("ライン", None), ("a..b", "a-b")],
)
def test_a_gateway_id_derives_from_the_node_id(node: str, gateway: str | None) -> None:
    assert gateway_of_node(node) == gateway


def _spoil(block: dict[str, object], path: str, value: object) -> dict[str, object]:
    """``block`` with the value at dotted ``path`` (list indexes as numbers) replaced."""
    *parents, leaf = path.split(".")
    here: object = block
    for part in parents:
        here = here[int(part)] if isinstance(here, list) else here[part]  # type: ignore[index]
    if isinstance(here, list):
        here[int(leaf)] = value
    else:
        assert isinstance(here, dict)
        here[leaf] = value
    return block


MACHINE = "sparkplug.factories.0.nodes.0.machines.0"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "factories.0.nodes.0.machines.0.metrics",
            {"Status/Code": "state_code"},
            f"{MACHINE}: Value error, fields ['current_a', 'good_raw'] are given by no metric",
        ),
        (
            "factories.0.nodes.0.group",
            "elsewhere",
            "sparkplug.factories.0: Value error, node Press Line 1: group 'elsewhere' is not in",
        ),
        (
            "factories.0.nodes.0.node",
            "ライン",
            "sparkplug.factories.0.nodes.0: Value error, node 'ライン' gives no gateway id",
        ),
        (
            "factories.0.nodes.0.node",
            "bad/node",
            "sparkplug.factories.0.nodes.0.node: String should match pattern",
        ),
        (
            "factories.0.nodes.0.machines.0.calendar",
            "night",
            "sparkplug.factories.0: Value error, machine press-1: unknown calendar 'night'",
        ),
        ("interval_s", 0, "sparkplug.interval_s: Input should be greater than 0"),
    ],
)
def test_errors_name_their_location(tmp_path: Path, path: str, value: object, message: str) -> None:
    with pytest.raises(IngestConfigError) as caught:
        _load(tmp_path, _spoil(_block(), path, value))
    assert message in str(caught.value)
    assert "ingest.yaml:" in str(caught.value)


def test_a_group_owned_by_two_factories_is_refused(tmp_path: Path) -> None:
    block = _block()
    factories = block["factories"]
    assert isinstance(factories, list)
    factories.append({**factories[0], "factory": "other-factory"})
    with pytest.raises(IngestConfigError, match="group 'tanaka-line' is owned by factories"):
        _load(tmp_path, block)


def test_two_nodes_as_one_gateway_are_refused() -> None:
    config = sparkplug_config("g", "h").model_dump()
    node = config["factories"][0]["nodes"][0]
    other = {**node, "node": "press line 1", "machines": [machine_mapping("press-9", None)]}
    config["factories"][0]["nodes"].append(other)
    with pytest.raises(ValueError, match=r"several nodes are gateway \['press-line-1'\]"):
        SparkplugConfig.model_validate(config)
    assert SparkplugNodeConfig.model_validate({**node, "gateway": "x"}).gateway_id == "x"


def test_a_message_of_a_group_no_factory_owns_is_refused_not_dropped() -> None:
    delivered: list[Incoming] = []
    host = SparkplugHost(sparkplug_config("mine", "h"), delivered.append, Clock(0.0))
    for topic in ("spBv1.0/theirs/NDATA/n1", "spBv1.0/mine/NDATA", "spBv1.0/mine/NBIRTH/x"):
        host.receive(classify(1, 7, 1, topic, b"\x08\x00"))
    assert [(d.mid, d.error.reason if d.error else None) for d in delivered] == [(7, "topic")] * 3
    details = [str(d.error) for d in delivered]
    assert "group 'theirs' is in no factory" in details[0]
    assert "4 or 5" in details[1] or "elements" in details[1]
    assert "edge node 'x' of group 'mine' is not mapped" in details[2]


def test_a_value_the_codec_cannot_read_leaves_the_field_as_it_was() -> None:
    """A metric whose datatype neither it nor its birth gives, or of a kind no field takes
    (a DataSet), is counted, never taken as "no value"."""
    delivered: list[Incoming] = []
    clock = Clock(1_800_000_000.0)
    host = SparkplugHost(sparkplug_config("g", "h"), delivered.append, clock)
    ms = round(clock.now * 1000)

    def send(kind: str, seq: int, *metrics: spb.Metric) -> None:
        payload = spb.encode(spb.Payload(timestamp_ms=ms, seq=seq, metrics=metrics))
        host.receive(classify(1, seq + 1, 0, f"spBv1.0/g/{kind}/Press Line 1", payload))

    send(
        "NBIRTH",
        0,
        spb.Metric("Status/Code", 1, ms, spb.DataType.Int32, 2),
        spb.Metric(spb.BDSEQ, None, ms, spb.DataType.UInt64, 0),
    )
    # a birth leaving a metric's datatype out (not compliant), then data without one, and a
    # DataSet: no value read, and not null either
    raw = pb.Payload(timestamp=ms, seq=1)
    raw.metrics.add(name="Spindle/Load", alias=7, timestamp=ms, double_value=1.0)
    host.receive(classify(1, 9, 0, "spBv1.0/g/DBIRTH/Press Line 1/Press2", raw.SerializeToString()))
    for seq, alias, datatype in ((2, 7, None), (3, 1, spb.DataType.DataSet)):
        raw = pb.Payload(timestamp=ms, seq=seq)
        metric = raw.metrics.add(alias=alias, timestamp=ms + 1000 * seq, int_value=3)
        if datatype is not None:
            metric.datatype = datatype
        topic = "spBv1.0/g/NDATA/Press Line 1"
        host.receive(classify(1, 9, 0, topic, raw.SerializeToString()))
    clock.now += 60
    host.tick()
    assert host.stats["undecoded_metrics"] == 3  # the birth's, the data's, the DataSet
    assert host.nodes["g", "Press Line 1"].feeds[0].values == {"code": 2}
    assert [d.error for d in delivered if d.error is not None] == []
