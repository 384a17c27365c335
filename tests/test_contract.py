"""The message contract: golden samples, the rules of docs/contract.md, and decode's promises.

Sections: golden samples, the document, ids and names, topics, dead-letter reasons,
strictness, timestamps, property tests (round trip, one broken rule, garbage in), calendar.
"""

import copy
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kyoso.contract import (
    ISO_22400_ELEMENT,
    MAX_INTERVAL_S,
    MAX_MESSAGE_BYTES,
    MAX_SAMPLES_PER_BATCH,
    SUBSCRIPTIONS,
    Break,
    Capability,
    ContractError,
    Counter,
    DeadLetterReason,
    GatewayStatus,
    InvalidIdError,
    MachineDescription,
    MachineState,
    Maintenance,
    Material,
    Message,
    Process,
    Sample,
    SampleBatch,
    Sharing,
    Shift,
    ShiftCalendar,
    SignalStats,
    StoreReceipt,
    Topic,
    TopicError,
    TopicKind,
    check_id,
    check_name,
    decode,
    encode,
    machine_topic,
    parse_topic,
    receipts_filter,
    samples_topic,
    status_topic,
    stored_topic,
)
from kyoso.contract.calendar import WEEKDAYS, Interval, Weekday

EXAMPLES = Path(__file__).resolve().parent / "contract_examples"
DOC = Path(__file__).resolve().parent.parent / "docs" / "contract.md"

FACTORY = "mori-plastics"
GATEWAY = "gw-01"
SESSION = "0f8e6c1a-4b7d-4e2a-9c35-7a1d2b3c4d5e"
TOKYO = timezone(timedelta(hours=9))

Json = Any
"""A parsed JSON value (dicts and lists are edited in place by the mutation helpers)."""

Path_ = tuple[str | int, ...]
"""Where a value sits inside a parsed JSON document."""

T = TypeVar("T")

PROPERTY = settings(max_examples=200, deadline=None)
"""Property tests build nested pydantic models, which is too slow for a fixed deadline."""


# --- helpers ------------------------------------------------------------------------------


def dumps(document: Json) -> bytes:
    """JSON bytes of ``document``; non-finite floats become NaN/Infinity literals."""
    return json.dumps(document, allow_nan=True).encode()


def topic_for(document: Json) -> str:
    """The topic a message document belongs on, from the identity it names."""
    if "samples" in document:
        return samples_topic(document["factory"], document["gateway"])
    if "calendar" in document:
        return machine_topic(document["factory"], document["gateway"], document["machine"])
    return status_topic(document["factory"], document["gateway"])


def topic_of(message: Message) -> str:
    if isinstance(message, SampleBatch):
        return samples_topic(message.factory, message.gateway)
    if isinstance(message, MachineDescription):
        return machine_topic(message.factory, message.gateway, message.machine)
    return status_topic(message.factory, message.gateway)


def refusal(topic: str, payload: bytes) -> ContractError:
    """The ContractError that decode raises; any other outcome fails the test."""
    with pytest.raises(ContractError) as caught:
        decode(topic, payload)
    return caught.value


def decode_or_refuse(topic: str, payload: bytes) -> Message | None:
    """decode, with a refusal mapped to None; any exception but ContractError escapes."""
    try:
        return decode(topic, payload)
    except ContractError:
        return None


def walk(document: Json, path: Path_ = ()) -> Iterator[tuple[Path_, Json]]:
    """Every value of a JSON document with its path, the document itself first."""
    yield path, document
    if isinstance(document, dict):
        for key, value in document.items():
            yield from walk(value, (*path, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from walk(value, (*path, index))


def get(document: Json, path: Path_) -> Json:
    for step in path:
        document = document[step]
    return document


def replaced(document: Json, path: Path_, value: Json) -> Json:
    """A deep copy of ``document`` with the value at ``path`` replaced."""
    result = copy.deepcopy(document)
    if not path:
        return value
    get(result, path[:-1])[path[-1]] = value
    return result


def is_number(value: Json) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number_paths(document: Json) -> list[Path_]:
    """Every numeric leaf except the version, which has its own rules."""
    return [p for p, v in walk(document) if is_number(v) and p != ("v",)]


def timestamp_paths(document: Json) -> list[Path_]:
    """Every absolute timestamp: ts, updated_at, and maintenance start/end."""
    return [
        p
        for p, v in walk(document)
        if isinstance(v, str)
        and p
        and (p[-1] in ("ts", "updated_at") or (p[-1] in ("start", "end") and "maintenance" in p))
    ]


def naive(timestamp: str) -> str:
    """The timestamp without its offset."""
    stripped = re.sub(r"(Z|[+-]\d\d:\d\d)$", "", timestamp)
    assert stripped != timestamp
    return stripped


def example_text(name: str) -> str:
    return (EXAMPLES / f"{name}.json").read_text(encoding="utf-8")


def example(name: str) -> Json:
    return json.loads(example_text(name))


def merged(intervals: list[Interval]) -> list[Interval]:
    """Touching or overlapping intervals joined, as a reference for the calendar tests."""
    result: list[Interval] = []
    for a, b in sorted(intervals):
        if result and a <= result[-1][1]:
            result[-1] = (result[-1][0], max(result[-1][1], b))
        else:
            result.append((a, b))
    return result


# --- golden samples -----------------------------------------------------------------------


def pinned_batch() -> SampleBatch:
    return SampleBatch(
        factory=FACTORY,
        gateway=GATEWAY,
        session=SESSION,
        samples=[
            Sample(
                machine="imm-01",
                seq=48213,
                ts=datetime(2026, 1, 12, 23, 15, tzinfo=UTC),
                interval_s=60.0,
                state=MachineState.DOWN,
                durations_s={MachineState.RUNNING: 52.5, MachineState.DOWN: 7.5},
                counters={"good": Counter(delta=2, total=1), "reject": Counter(delta=0, total=17)},
                signals={
                    "power_kw": SignalStats(last=3.1, mean=12.4, min=3.1, max=15.2, count=60),
                    "load_pct": SignalStats(last=0.0, mean=61.5, min=0.0, max=78.0, count=60),
                },
                alarm=240,
            ),
            Sample(
                machine="blow-01",
                seq=48214,
                ts=datetime(2026, 1, 13, 8, 15, tzinfo=TOKYO),
                interval_s=60.0,
                state=MachineState.UNKNOWN,
                durations_s={MachineState.RUNNING: 21.0, MachineState.UNKNOWN: 39.0},
                missing=["current_a"],
            ),
        ],
    )


def pinned_description() -> MachineDescription:
    weekdays: list[Weekday] = ["mon", "tue", "wed", "thu", "fri"]
    return MachineDescription(
        factory=FACTORY,
        gateway=GATEWAY,
        machine="imm-01",
        name="180 t injection moulding machine",
        updated_at=datetime(2026, 1, 12, 22, 58, 4, tzinfo=UTC),
        capabilities=[
            Capability(
                process=Process.INJECTION_MOULDING,
                materials=[Material.PP, Material.PE, Material.ABS, Material.PA],
                envelope_mm=(470.0, 470.0, 400.0),
                force_kn=1800.0,
                max_part_kg=0.6,
            )
        ],
        ideal_cycle_time_s=24.0,
        calendar=ShiftCalendar(
            timezone="Asia/Tokyo",
            shifts=[
                Shift(
                    name="early",
                    days=weekdays,
                    start=time(6),
                    end=time(14),
                    breaks=[Break(start=time(10), end=time(10, 20))],
                ),
                Shift(
                    name="late",
                    days=weekdays,
                    start=time(14),
                    end=time(22),
                    breaks=[Break(start=time(18), end=time(18, 20))],
                ),
                Shift(
                    name="night",
                    days=["sun", "mon", "tue", "wed", "thu"],
                    start=time(22),
                    end=time(6),
                    breaks=[Break(start=time(2), end=time(2, 20))],
                ),
            ],
            holidays=[date(2026, 12, 31), date(2027, 1, 1)],
            maintenance=[
                Maintenance(
                    start=datetime(2026, 2, 6, 8, tzinfo=TOKYO),
                    end=datetime(2026, 2, 6, 17, tzinfo=TOKYO),
                    reason="annual hydraulic service",
                )
            ],
        ),
        sharing=Sharing(capacity=True, kpis=False),
    )


def pinned_status(
    status: Literal["online", "offline"],
    reason: Literal["connected", "shutdown", "connection_lost"],
    ts: datetime,
) -> GatewayStatus:
    return GatewayStatus(
        factory=FACTORY,
        gateway=GATEWAY,
        session=SESSION,
        status=status,
        ts=ts,
        reason=reason,
        software="kyoso-gateway 0.1.0",
    )


def pinned_online() -> GatewayStatus:
    return pinned_status("online", "connected", datetime(2026, 1, 12, 22, 58, 3, tzinfo=UTC))


def pinned_will() -> GatewayStatus:
    return pinned_status("offline", "connection_lost", datetime(2026, 1, 12, 22, 58, 2, tzinfo=UTC))


@dataclass(frozen=True)
class Golden:
    """One example file, the message it must decode to, and that message's exact wire form."""

    name: str
    topic: str
    build: Callable[[], Message]
    wire: bytes


GOLDEN = [
    Golden(
        "sample_batch",
        "kyoso/v1/mori-plastics/gw-01/samples",
        pinned_batch,
        b'{"v":1,"factory":"mori-plastics","gateway":"gw-01",'
        b'"session":"0f8e6c1a-4b7d-4e2a-9c35-7a1d2b3c4d5e","samples":['
        b'{"machine":"imm-01","seq":48213,"ts":"2026-01-12T23:15:00Z","interval_s":60.0,'
        b'"state":"down","durations_s":{"running":52.5,"down":7.5},'
        b'"counters":{"good":{"delta":2,"total":1},"reject":{"delta":0,"total":17}},'
        b'"signals":{"power_kw":{"last":3.1,"mean":12.4,"min":3.1,"max":15.2,"count":60},'
        b'"load_pct":{"last":0.0,"mean":61.5,"min":0.0,"max":78.0,"count":60}},'
        b'"alarm":240,"missing":[]},'
        b'{"machine":"blow-01","seq":48214,"ts":"2026-01-12T23:15:00Z","interval_s":60.0,'
        b'"state":"unknown","durations_s":{"running":21.0,"unknown":39.0},'
        b'"counters":{},"signals":{},"missing":["current_a"]}]}',
    ),
    Golden(
        "machine_description",
        "kyoso/v1/mori-plastics/gw-01/machines/imm-01",
        pinned_description,
        b'{"v":1,"factory":"mori-plastics","gateway":"gw-01","machine":"imm-01",'
        b'"name":"180 t injection moulding machine","updated_at":"2026-01-12T22:58:04Z",'
        b'"capabilities":[{"process":"injection_moulding","materials":["pp","pe","abs","pa"],'
        b'"envelope_mm":[470.0,470.0,400.0],"force_kn":1800.0,"max_part_kg":0.6}],'
        b'"ideal_cycle_time_s":24.0,"calendar":{"timezone":"Asia/Tokyo","shifts":['
        b'{"name":"early","days":["mon","tue","wed","thu","fri"],"start":"06:00:00",'
        b'"end":"14:00:00","breaks":[{"start":"10:00:00","end":"10:20:00"}]},'
        b'{"name":"late","days":["mon","tue","wed","thu","fri"],"start":"14:00:00",'
        b'"end":"22:00:00","breaks":[{"start":"18:00:00","end":"18:20:00"}]},'
        b'{"name":"night","days":["sun","mon","tue","wed","thu"],"start":"22:00:00",'
        b'"end":"06:00:00","breaks":[{"start":"02:00:00","end":"02:20:00"}]}],'
        b'"holidays":["2026-12-31","2027-01-01"],"maintenance":[{'
        b'"start":"2026-02-06T08:00:00+09:00","end":"2026-02-06T17:00:00+09:00",'
        b'"reason":"annual hydraulic service"}]},"sharing":{"capacity":true,"kpis":false}}',
    ),
    Golden(
        "status_online",
        "kyoso/v1/mori-plastics/gw-01/status",
        pinned_online,
        b'{"v":1,"factory":"mori-plastics","gateway":"gw-01",'
        b'"session":"0f8e6c1a-4b7d-4e2a-9c35-7a1d2b3c4d5e","status":"online",'
        b'"ts":"2026-01-12T22:58:03Z","reason":"connected","software":"kyoso-gateway 0.1.0"}',
    ),
    Golden(
        "status_offline_will",
        "kyoso/v1/mori-plastics/gw-01/status",
        pinned_will,
        b'{"v":1,"factory":"mori-plastics","gateway":"gw-01",'
        b'"session":"0f8e6c1a-4b7d-4e2a-9c35-7a1d2b3c4d5e","status":"offline",'
        b'"ts":"2026-01-12T22:58:02Z","reason":"connection_lost",'
        b'"software":"kyoso-gateway 0.1.0"}',
    ),
]
EXAMPLE_NAMES = [g.name for g in GOLDEN]
by_golden = pytest.mark.parametrize("golden", GOLDEN, ids=EXAMPLE_NAMES)


def test_every_example_file_is_pinned() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.json")) == sorted(EXAMPLE_NAMES)


@by_golden
def test_example_file_decodes_to_the_pinned_message(golden: Golden) -> None:
    payload = (EXAMPLES / f"{golden.name}.json").read_bytes()
    assert decode(golden.topic, payload) == golden.build()


@by_golden
def test_encoding_is_pinned_byte_for_byte(golden: Golden) -> None:
    assert encode(golden.build()) == golden.wire


@by_golden
def test_pinned_wire_form_decodes_back(golden: Golden) -> None:
    assert decode(golden.topic, golden.wire) == golden.build()


# --- the document -------------------------------------------------------------------------


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def doc_json_blocks() -> list[str]:
    return re.findall(r"^```json\n(.*?)^```$", doc_text(), flags=re.MULTILINE | re.DOTALL)


def test_the_doc_has_the_examples_as_json_blocks() -> None:
    blocks = [block.strip() for block in doc_json_blocks()]
    assert len(blocks) >= len(GOLDEN)
    for name in EXAMPLE_NAMES:
        assert example_text(name).strip() in blocks, f"{name}.json differs from the doc"


@pytest.mark.parametrize("index", range(len(doc_json_blocks())))
def test_every_json_block_of_the_doc_validates(index: int) -> None:
    block = doc_json_blocks()[index]
    decode(topic_for(json.loads(block)), block.encode())


def table_row(text: str, value: str) -> str:
    """The documented table row whose first cell is ``value``."""
    rows = re.findall(rf"^\| `{re.escape(value)}` \|.*$", text, flags=re.MULTILINE)
    assert rows, f"the doc has no table row for {value!r}"
    return str(rows[0])


def test_the_doc_lists_every_process_material_and_state() -> None:
    text = doc_text()
    for value in [*Process, *Material]:
        table_row(text, value)
    for state, element in ISO_22400_ELEMENT.items():
        assert (element or "none") in table_row(text, state)


def spaced(number: int) -> str:
    """A number as the doc writes it: thousands separated by a space."""
    return f"{number:,}".replace(",", " ")


def test_the_doc_quotes_the_limits_of_the_code() -> None:
    text = doc_text()
    for limit in [MAX_MESSAGE_BYTES, MAX_SAMPLES_PER_BATCH, int(MAX_INTERVAL_S)]:
        assert spaced(limit) in text
    for subscription in SUBSCRIPTIONS:
        assert subscription in text


# --- ids and names ------------------------------------------------------------------------

VALID_IDS = ["mori-plastics", "gw-01", "imm_01", "7", "a-", "0_", SESSION, "a" * 63]
INVALID_IDS = {
    "empty": "",
    "64 chars": "a" * 64,
    "uppercase": "Mori-plastics",
    "space": "gw 01",
    "comma": "a,b",
    "equals": "a=b",
    "double quote": '"a"',
    "single quote": "'a'",
    "trailing newline": "gw-01\n",
    "inner newline": "gw\n01",
    "leading dash": "-gw",
    "leading underscore": "_gw",
    "slash": "gw/01",
    "plus": "+",
    "hash": "#",
    "dollar": "$sys",
    "dot": "gw.01",
    "nul": "gw\x0001",
    "non-ascii": "café",
    "kanji": "工場1",
    "fullwidth digit": "gw\uff11",
}
ids = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True)
names = st.from_regex(r"[a-z][a-z0-9_]{0,62}", fullmatch=True)
VALID_NAMES = ["good", "power_kw", "a", "current_a2", "x" * 63]
INVALID_NAMES = ["", "Good", "power-kw", "1st", "_x", "x" * 64, "a b", "ä", "a\n"]


@pytest.mark.parametrize("value", VALID_IDS)
def test_valid_id_is_accepted(value: str) -> None:
    assert check_id(value) == value


@pytest.mark.parametrize("value", INVALID_IDS.values(), ids=INVALID_IDS.keys())
def test_invalid_id_is_refused(value: str) -> None:
    with pytest.raises(InvalidIdError):
        check_id(value, "factory")


@pytest.mark.parametrize("value", INVALID_IDS.values(), ids=INVALID_IDS.keys())
def test_invalid_id_in_a_payload_is_a_schema_error(value: str) -> None:
    document = replaced(example("status_online"), ("session",), value)
    assert refusal(status_topic(FACTORY, GATEWAY), dumps(document)).reason == "schema"


@pytest.mark.parametrize("value", VALID_NAMES)
def test_valid_name_is_accepted(value: str) -> None:
    assert check_name(value) == value


@pytest.mark.parametrize("value", INVALID_NAMES)
def test_invalid_name_is_refused_as_a_name_and_as_a_signal(value: str) -> None:
    with pytest.raises(InvalidIdError):
        check_name(value)
    signal = {"last": 1.0, "mean": 1.0, "min": 1.0, "max": 1.0}
    document = replaced(example("sample_batch"), ("samples", 0, "signals"), {value: signal})
    assert refusal(samples_topic(FACTORY, GATEWAY), dumps(document)).reason == "schema"


# --- topics -------------------------------------------------------------------------------


def test_topic_builders() -> None:
    assert samples_topic("f", "g") == "kyoso/v1/f/g/samples"
    assert status_topic("f", "g") == "kyoso/v1/f/g/status"
    assert machine_topic("f", "g", "m") == "kyoso/v1/f/g/machines/m"
    assert stored_topic("f", "g", "w") == "kyoso/v1/f/g/stored/w"
    assert receipts_filter("f", "g") == "kyoso/v1/f/g/stored/+"


def test_subscriptions_cover_the_four_kinds() -> None:
    assert SUBSCRIPTIONS == (
        "kyoso/v1/+/+/samples",
        "kyoso/v1/+/+/status",
        "kyoso/v1/+/+/machines/+",
        "kyoso/v1/+/+/stored/+",
    )


def _receipt(**changes: object) -> bytes:
    body: dict[str, object] = {
        "v": 1,
        "factory": FACTORY,
        "gateway": GATEWAY,
        "worker": "kyoso-ingest",
        "ts": "2026-12-05T10:00:00Z",
        "sessions": [{"session": "s-1", "ranges": [[0, 10], [12, 20]]}],
    }
    return dumps({**body, **changes})


def test_a_store_receipt_round_trips() -> None:
    topic = stored_topic(FACTORY, GATEWAY, "kyoso-ingest")
    receipt = decode(topic, _receipt())
    assert isinstance(receipt, StoreReceipt)
    assert receipt.sessions[0].ranges == [(0, 10), (12, 20)]
    assert decode(topic, encode(receipt)) == receipt


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"worker": "other-ingest"}, "spoofed"),  # not the worker of the topic
        ({"sessions": [{"session": "s-1", "ranges": [[5, 4]]}]}, "schema"),  # backwards
        ({"sessions": [{"session": "s-1", "ranges": [[0, 4], [5, 9]]}]}, "schema"),  # adjacent
        ({"sessions": [{"session": "s-1", "ranges": [[6, 9], [0, 4]]}]}, "schema"),  # unordered
        ({"sessions": [{"session": "s-1", "ranges": []}]}, "schema"),
        ({"sessions": [{"session": "s-1", "ranges": [[-1, 4]]}]}, "schema"),
    ],
)
def test_a_store_receipt_that_does_not_add_up_is_refused(
    changes: dict[str, object], reason: str
) -> None:
    topic = stored_topic(FACTORY, GATEWAY, "kyoso-ingest")
    assert refusal(topic, _receipt(**changes)).reason == reason


@PROPERTY
@given(factory=ids, gateway=ids, machine=ids)
def test_built_topics_parse_back(factory: str, gateway: str, machine: str) -> None:
    expected = {
        samples_topic(factory, gateway): Topic(TopicKind.SAMPLES, factory, gateway),
        status_topic(factory, gateway): Topic(TopicKind.STATUS, factory, gateway),
        machine_topic(factory, gateway, machine): Topic(
            TopicKind.MACHINE, factory, gateway, machine
        ),
        stored_topic(factory, gateway, machine): Topic(
            TopicKind.STORED, factory, gateway, worker=machine
        ),
    }
    for topic, parsed in expected.items():
        assert parse_topic(topic) == parsed
        assert str(parsed) == topic


REFUSED_TOPICS = {
    "empty": "",
    "root only": "kyoso/v1",
    "root slash": "kyoso/v1/",
    "other version": "kyoso/v2/f/g/samples",
    "uppercase root": "Kyoso/v1/f/g/samples",
    "leading slash": "/kyoso/v1/f/g/samples",
    "too short": "kyoso/v1/f/g",
    "samples too deep": "kyoso/v1/f/g/samples/x",
    "status trailing slash": "kyoso/v1/f/g/status/",
    "machines without machine": "kyoso/v1/f/g/machines",
    "machines too deep": "kyoso/v1/f/g/machines/m/x",
    "unknown kind": "kyoso/v1/f/g/events",
    "singular machine": "kyoso/v1/f/g/machine/m",
    "uppercase factory": "kyoso/v1/F/g/samples",
    "empty gateway": "kyoso/v1/f//samples",
    "bad machine id": "kyoso/v1/f/g/machines/-m",
    "plus factory": "kyoso/v1/+/g/samples",
    "plus gateway": "kyoso/v1/f/+/status",
    "plus machine": "kyoso/v1/f/g/machines/+",
    "hash machine": "kyoso/v1/f/g/machines/#",
    "hash after gateway": "kyoso/v1/f/g/#",
    "hash after root": "kyoso/v1/#",
}


@pytest.mark.parametrize("topic", REFUSED_TOPICS.values(), ids=REFUSED_TOPICS.keys())
def test_topic_is_refused(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic)
    assert refusal(topic, example_text("status_online").encode()).reason == "topic"


@pytest.mark.parametrize("bad", ["", "F", "+", "#", "a/b", "-a"])
@pytest.mark.parametrize(
    "build",
    [
        lambda bad: samples_topic(bad, "g"),
        lambda bad: status_topic("f", bad),
        lambda bad: machine_topic("f", "g", bad),
    ],
    ids=["samples", "status", "machine"],
)
def test_topic_builders_refuse_bad_ids(build: Callable[[str], str], bad: str) -> None:
    with pytest.raises(InvalidIdError):
        build(bad)


# --- dead-letter reasons ------------------------------------------------------------------


def padded(payload: bytes, size: int) -> bytes:
    """``payload`` padded with trailing whitespace (still valid JSON) to ``size`` bytes."""
    return payload + b" " * (size - len(payload))


ONLINE = example_text("status_online").encode()
STATUS_TOPIC = status_topic(FACTORY, GATEWAY)
DEAD_LETTERS: dict[str, tuple[DeadLetterReason, str, bytes]] = {
    "oversize": ("oversize", STATUS_TOPIC, padded(ONLINE, MAX_MESSAGE_BYTES + 1)),
    "oversize before topic": ("oversize", "not/kyoso", padded(ONLINE, MAX_MESSAGE_BYTES + 1)),
    "topic": ("topic", "kyoso/v1/mori-plastics/gw-01/events", ONLINE),
    "topic before json": ("topic", "kyoso/v1/x", b"{"),
    "json truncated": ("json", STATUS_TOPIC, b'{"v": 1,'),
    "json empty": ("json", STATUS_TOPIC, b""),
    "json not utf-8": ("json", STATUS_TOPIC, ONLINE.replace(b"gw-01", b"gw-\xff1")),
    "json trailing garbage": ("json", STATUS_TOPIC, ONLINE + b"x"),
    "json too deep": ("json", STATUS_TOPIC, b"[" * 10_000 + b"]" * 10_000),
    "version": ("version", STATUS_TOPIC, dumps(replaced(json.loads(ONLINE), ("v",), 2))),
    "version before schema": ("version", STATUS_TOPIC, b'{"v": 2}'),
    "schema": ("schema", STATUS_TOPIC, b'{"v": 1, "factory": "mori-plastics"}'),
    "schema not an object": ("schema", STATUS_TOPIC, b"[]"),
    "spoofed gateway": (
        "spoofed",
        STATUS_TOPIC,
        dumps(replaced(json.loads(ONLINE), ("gateway",), "gw-02")),
    ),
    "spoofed factory": (
        "spoofed",
        samples_topic("okada-machining", GATEWAY),
        example_text("sample_batch").encode(),
    ),
    "spoofed machine": (
        "spoofed",
        machine_topic(FACTORY, GATEWAY, "imm-02"),
        example_text("machine_description").encode(),
    ),
}


@pytest.mark.parametrize("case", DEAD_LETTERS.values(), ids=DEAD_LETTERS.keys())
def test_dead_letter_reason(case: tuple[DeadLetterReason, str, bytes]) -> None:
    reason, topic, payload = case
    error = refusal(topic, payload)
    assert error.reason == reason
    assert str(error)


def test_every_dead_letter_reason_has_a_case() -> None:
    assert {reason for reason, _, _ in DEAD_LETTERS.values()} == set(get_args(DeadLetterReason))


def test_payload_of_exactly_the_size_limit_is_accepted() -> None:
    assert decode(STATUS_TOPIC, padded(ONLINE, MAX_MESSAGE_BYTES)) == pinned_online()


# --- strictness ---------------------------------------------------------------------------

by_example = pytest.mark.parametrize("name", EXAMPLE_NAMES)


def assert_refused(name: str, document: Json, reason: DeadLetterReason = "schema") -> None:
    error = refusal(topic_for(example(name)), dumps(document))
    assert error.reason == reason, f"{error.reason}: {error}"


def assert_each_refused(name: str, paths: list[Path_], value: Callable[[Json], Json]) -> None:
    """Replacing the value at each path (one at a time) makes the example refused."""
    document = example(name)
    assert paths
    for path in paths:
        try:
            assert_refused(name, replaced(document, path, value(get(document, path))))
        except AssertionError as exc:
            raise AssertionError(f"{name} at {path}: {exc}") from exc


NUMERIC_EXAMPLES = ["sample_batch", "machine_description"]
"""The examples with numeric fields besides ``v`` (the status has none)."""


@pytest.mark.parametrize("name", NUMERIC_EXAMPLES)
@pytest.mark.parametrize("literal", [math.nan, math.inf, -math.inf], ids=str)
def test_non_finite_literal_is_refused_in_every_numeric_field(name: str, literal: float) -> None:
    assert_each_refused(name, number_paths(example(name)), lambda _: literal)


@pytest.mark.parametrize("name", NUMERIC_EXAMPLES)
@pytest.mark.parametrize(
    "wrong",
    [str, lambda _: True, lambda _: False, lambda v: [v], lambda v: {"value": v}],
    ids=["string", "true", "false", "list", "object"],
)
def test_wrong_json_type_for_a_number_is_refused(name: str, wrong: Callable[[Json], Json]) -> None:
    assert_each_refused(name, number_paths(example(name)), wrong)


@by_example
def test_naive_timestamp_is_refused(name: str) -> None:
    assert_each_refused(name, timestamp_paths(example(name)), naive)


@by_example
def test_unknown_field_is_refused_at_every_level(name: str) -> None:
    document = example(name)
    objects = [p for p, v in walk(document) if isinstance(v, dict)]
    for path in objects:
        grown = copy.deepcopy(document)
        get(grown, path)["unknown_field"] = "?"
        try:
            assert_refused(name, grown)
        except AssertionError as exc:
            raise AssertionError(f"unknown field at {path}: {exc}") from exc


@pytest.mark.parametrize("version", [2, 0, "1", None, [1]], ids=repr)
@by_example
def test_other_version_is_refused(name: str, version: Json) -> None:
    assert_refused(name, replaced(example(name), ("v",), version), "version")


def first_sample(**fields: Json) -> Json:
    """The example batch with fields of its first sample replaced."""
    document = example("sample_batch")
    document["samples"][0].update(fields)
    return document


@pytest.mark.parametrize(
    ("durations", "accepted"),
    [
        ({"running": 52.5, "down": 7.5}, True),
        ({"running": 52.5, "down": 7.51}, True),
        ({"running": 52.5, "down": 7.49}, True),
        ({"running": 52.5, "down": 7.52}, False),
        ({"running": 52.5, "down": 7.48}, False),
        ({"running": 52.5}, False),
        ({}, False),
        ({"running": 67.5, "down": -7.5}, False),
        ({"running": 60.0, "idle": -0.0}, True),
        ({"running": 60.0, "bogus": 0.0}, False),
    ],
)
def test_durations_are_non_negative_and_sum_to_the_interval(
    durations: dict[str, float], accepted: bool
) -> None:
    document = first_sample(durations_s=durations)
    if accepted:
        decode(samples_topic(FACTORY, GATEWAY), dumps(document))
    else:
        assert_refused("sample_batch", document)


@pytest.mark.parametrize(
    "interval_s", [0, -60.0, MAX_INTERVAL_S + 0.5], ids=["zero", "negative", "too long"]
)
def test_interval_out_of_range_is_refused(interval_s: float) -> None:
    durations = {"running": interval_s} if interval_s > 0 else {}
    assert_refused("sample_batch", first_sample(interval_s=interval_s, durations_s=durations))


@pytest.mark.parametrize("seqs", [(5, 4), (5, 5), (-1, 0), (2**63 - 1, 2**63)], ids=str)
def test_seq_must_strictly_increase_within_range(seqs: tuple[int, int]) -> None:
    document = example("sample_batch")
    for sample, seq in zip(document["samples"], seqs, strict=True):
        sample["seq"] = seq
    assert_refused("sample_batch", document)


def minimal_batch(count: int) -> Json:
    document = example("sample_batch")
    template = document["samples"][1]
    document["samples"] = [{**template, "seq": seq} for seq in range(count)]
    return document


def test_batch_of_the_sample_limit_is_accepted_and_one_more_refused() -> None:
    topic = samples_topic(FACTORY, GATEWAY)
    accepted = decode(topic, dumps(minimal_batch(MAX_SAMPLES_PER_BATCH)))
    assert isinstance(accepted, SampleBatch)
    assert len(accepted.samples) == MAX_SAMPLES_PER_BATCH
    assert_refused("sample_batch", minimal_batch(MAX_SAMPLES_PER_BATCH + 1))
    assert_refused("sample_batch", minimal_batch(0))


REFUSED_SIGNALS = {
    "last above max": {"last": 15.3, "mean": 12.4, "min": 3.1, "max": 15.2},
    "last below min": {"last": 3.0, "mean": 12.4, "min": 3.1, "max": 15.2},
    "mean above max": {"last": 5.0, "mean": 15.3, "min": 3.1, "max": 15.2},
    "mean just above max": {"last": 5.0, "mean": 15.2 + 1e-6, "min": 3.1, "max": 15.2},
    "min above max": {"last": 5.0, "mean": 5.0, "min": 15.2, "max": 3.1},
    "count 0": {"last": 5.0, "mean": 5.0, "min": 3.1, "max": 15.2, "count": 0},
    "no max": {"last": 5.0, "mean": 5.0, "min": 3.1},
}
ACCEPTED_SIGNALS = {
    "constant": {"last": 5.0, "mean": 5.0, "min": 5.0, "max": 5.0},
    "bounds": {"last": 3.1, "mean": 15.2, "min": 3.1, "max": 15.2, "count": 1_000_000},
    "mean rounded above": {"last": 1.0, "mean": 1.0 + 2**-52, "min": 1.0, "max": 1.0},
    "mean rounded below": {"last": -1e12, "mean": -1e12 - 1e-4, "min": -1e12, "max": 0.0},
}


@pytest.mark.parametrize("stats", REFUSED_SIGNALS.values(), ids=REFUSED_SIGNALS.keys())
def test_inconsistent_signal_is_refused(stats: Json) -> None:
    assert_refused("sample_batch", first_sample(signals={"power_kw": stats}))


@pytest.mark.parametrize("stats", ACCEPTED_SIGNALS.values(), ids=ACCEPTED_SIGNALS.keys())
def test_signal_mean_may_stray_a_rounding_error(stats: Json) -> None:
    decode(samples_topic(FACTORY, GATEWAY), dumps(first_sample(signals={"power_kw": stats})))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("samples", 0, "state"), "Running"),
        (("samples", 0, "counters", "good", "delta"), -1),
        (("samples", 0, "counters", "good", "delta"), 1_000_000_001),
        (("samples", 0, "counters", "good", "total"), 2**64),
        (("samples", 0, "alarm"), 2**32),
        (("samples", 0, "missing"), ["current-a"]),
        (("samples", 0, "machine"), "IMM-01"),
    ],
    ids=str,
)
def test_out_of_range_sample_value_is_refused(path: Path_, value: Json) -> None:
    assert_refused("sample_batch", replaced(example("sample_batch"), path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("name",), "x" * 129),
        (("capabilities", 0, "process"), "cnc_milling_7axis"),
        (("capabilities", 0, "materials"), ["wood"]),
        (("capabilities", 0, "envelope_mm"), [470.0, 470.0]),
        (("capabilities", 0, "force_kn"), 0),
        (("capabilities", 0, "tolerance_mm"), 0),
        (("ideal_cycle_time_s",), 86_401),
        (("calendar", "timezone"), "Mars/Olympus_Mons"),
        (("calendar", "shifts", 0, "days"), []),
        (("calendar", "shifts", 0, "days"), ["mon", "mon"]),
        (("calendar", "shifts", 0, "days"), ["monday"]),
        (("calendar", "shifts", 0, "end"), "24:00"),
        (("calendar", "holidays"), ["2026-12-31T00:00:00"]),
        (("calendar", "maintenance", 0, "end"), "2026-02-06T08:00:00+09:00"),
        (("calendar", "maintenance", 0, "reason"), "x" * 201),
    ],
    ids=str,
)
def test_out_of_range_description_value_is_refused(path: Path_, value: Json) -> None:
    assert_refused("machine_description", replaced(example("machine_description"), path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [(("status",), "rebooting"), (("reason",), "crashed"), (("software",), "x" * 65)],
    ids=str,
)
def test_out_of_range_status_value_is_refused(path: Path_, value: Json) -> None:
    assert_refused("status_online", replaced(example("status_online"), path, value))


# --- timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "2026-01-12T23:15:00Z",
        "2026-01-12T23:15:00+00:00",
        "2026-01-13T08:15:00+09:00",
        "2026-01-12T17:45:00-05:30",
        "2026-01-13T00:15:00+01:00",
    ],
)
def test_timestamps_with_offsets_normalise_to_utc(written: str) -> None:
    expected = datetime(2026, 1, 12, 23, 15, tzinfo=UTC)
    batch = decode(samples_topic(FACTORY, GATEWAY), dumps(first_sample(ts=written)))
    status = decode(STATUS_TOPIC, dumps(replaced(example("status_online"), ("ts",), written)))
    assert isinstance(batch, SampleBatch)
    assert isinstance(status, GatewayStatus)
    for ts in (batch.samples[0].ts, status.ts):
        assert ts == expected
        assert ts.utcoffset() == timedelta(0)
    assert b'"ts":"2026-01-12T23:15:00Z"' in encode(status)


def test_maintenance_keeps_its_offset_on_the_wire() -> None:
    assert b'"start":"2026-02-06T08:00:00+09:00"' in encode(pinned_description())


# --- strategies for valid messages --------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
# Years 2000-2099: far from the ends of the calendar, where an offset can push the UTC
# conversion out of range (test_timestamps_out_of_range_once_in_utc_are_refused).
timestamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=offsets
)
texts = st.text(max_size=40)


def positive(limit: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=0, max_value=limit, exclude_min=True)


def optional(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


@st.composite
def durations(draw: st.DrawFn, interval_s: float) -> dict[MachineState, float]:
    """Durations of distinct states that tile ``interval_s`` exactly (up to rounding)."""
    states = draw(st.lists(st.sampled_from(MachineState), min_size=1, unique=True))
    cuts = sorted(
        draw(st.lists(st.floats(0, interval_s), min_size=len(states) - 1, max_size=len(states) - 1))
    )
    edges = [0.0, *cuts, interval_s]
    return {state: b - a for state, a, b in zip(states, edges, edges[1:], strict=False)}


@st.composite
def signal_stats(draw: st.DrawFn) -> SignalStats:
    values = sorted(draw(st.lists(finite, min_size=1, max_size=4)))
    low, high = values[0], values[-1]
    return SignalStats(
        last=draw(st.sampled_from(values)),
        mean=draw(st.floats(low, high)),
        min=low,
        max=high,
        count=draw(st.integers(1, 1_000_000)),
    )


counters = st.builds(
    Counter, delta=st.integers(0, 1_000_000_000), total=optional(st.integers(0, 2**64 - 1))
)


@st.composite
def samples(draw: st.DrawFn, seq: int) -> Sample:
    interval_s = draw(positive(MAX_INTERVAL_S))
    return Sample(
        machine=draw(ids),
        seq=seq,
        ts=draw(timestamps),
        interval_s=interval_s,
        state=draw(st.sampled_from(MachineState)),
        durations_s=draw(durations(interval_s)),
        counters=(present_counters := draw(st.dictionaries(names, counters, max_size=3))),
        signals=(present_signals := draw(st.dictionaries(names, signal_stats(), max_size=3))),
        alarm=draw(optional(st.integers(0, 2**32 - 1))),
        missing=draw(
            st.lists(
                names.filter(lambda n: n not in present_counters and n not in present_signals),
                max_size=3,
            )
        ),
    )


@st.composite
def batches(draw: st.DrawFn) -> SampleBatch:
    first = draw(st.integers(0, 2**62))
    steps = draw(st.lists(st.integers(1, 2**40), max_size=7))
    seqs = list(itertools.accumulate(steps, initial=first))
    return SampleBatch(
        factory=draw(ids),
        gateway=draw(ids),
        session=draw(ids),
        samples=[draw(samples(seq)) for seq in seqs],
    )


capabilities = st.builds(
    Capability,
    process=st.sampled_from(Process),
    materials=st.lists(st.sampled_from(Material), max_size=4, unique=True),
    envelope_mm=optional(st.tuples(positive(100_000), positive(100_000), positive(100_000))),
    max_thickness_mm=optional(positive(1000)),
    force_kn=optional(positive(100_000)),
    max_part_kg=optional(positive(100_000)),
    tolerance_mm=optional(st.floats(0.0001, 10)),
)
ZONES = ["UTC", "Asia/Tokyo", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]


def _clock(origin: time, offset_s: int) -> time:
    """The wall-clock time ``offset_s`` seconds after ``origin``, modulo a day."""
    seconds = (origin.hour * 3600 + origin.minute * 60 + origin.second + offset_s) % 86_400
    return time(seconds // 3600, seconds // 60 % 60, seconds % 60)


@st.composite
def shifts(draw: st.DrawFn) -> Shift:
    """A shift with breaks inside it, as the contract requires."""
    start = draw(st.times()).replace(microsecond=0)
    length = draw(st.integers(60, 86_400))
    pauses = []
    for _ in range(draw(st.integers(0, 3))):
        begin = draw(st.integers(0, length - 1))
        # A break ends on another clock time than it starts: a whole day's break is no break.
        end = draw(st.integers(begin + 1, min(length, begin + 86_399)))
        pauses.append(Break(start=_clock(start, begin), end=_clock(start, end)))
    return Shift(
        name=draw(texts),
        days=draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True)),
        start=start,
        end=_clock(start, length),
        breaks=pauses,
    )


@st.composite
def maintenance_windows(draw: st.DrawFn) -> Maintenance:
    start = draw(timestamps)
    length = draw(st.timedeltas(timedelta(microseconds=1), timedelta(days=3)))
    return Maintenance(start=start, end=start + length, reason=draw(texts))


def calendars(
    shift_strategy: st.SearchStrategy[Shift],
) -> st.SearchStrategy[ShiftCalendar]:
    return st.builds(
        ShiftCalendar,
        timezone=st.sampled_from(ZONES),
        shifts=st.lists(shift_strategy, max_size=4),
        holidays=st.lists(st.dates(date(2000, 1, 1), date(2099, 12, 31)), max_size=4),
        maintenance=st.lists(maintenance_windows(), max_size=3),
    )


descriptions = st.builds(
    MachineDescription,
    factory=ids,
    gateway=ids,
    machine=ids,
    name=st.text(max_size=128),
    updated_at=timestamps,
    capabilities=st.lists(capabilities, max_size=3),
    ideal_cycle_time_s=optional(positive(86_400)),
    calendar=calendars(shifts()),
    sharing=st.builds(Sharing, capacity=st.booleans(), kpis=st.booleans()),
)
statuses = st.builds(
    GatewayStatus,
    factory=ids,
    gateway=ids,
    session=ids,
    status=st.just("offline"),
    ts=timestamps,
    reason=st.sampled_from(["shutdown", "connection_lost"]),
    software=st.text(max_size=64),
) | st.builds(
    GatewayStatus,
    factory=ids,
    gateway=ids,
    session=ids,
    status=st.just("online"),
    ts=timestamps,
    reason=st.just("connected"),
    software=st.text(max_size=64),
)
messages: st.SearchStrategy[Message] = batches() | descriptions | statuses


# --- property: round trip -----------------------------------------------------------------


@PROPERTY
@given(message=messages)
def test_every_valid_message_round_trips_within_the_limits(message: Message) -> None:
    payload = encode(message)
    assert len(payload) <= MAX_MESSAGE_BYTES
    assert decode(topic_of(message), payload) == message


# --- property: one broken rule is always refused ------------------------------------------


@dataclass(frozen=True)
class Mutation:
    """A way to break exactly one rule at one of the ``sites`` of a valid document."""

    name: str
    sites: Callable[[Json], list[Path_]]
    apply: Callable[[Json, Path_, st.DataObject], Json]
    reasons: frozenset[DeadLetterReason] = frozenset({"schema"})


def object_paths(document: Json) -> list[Path_]:
    return [p for p, v in walk(document) if isinstance(v, dict)]


def typed_paths(kind: type) -> Callable[[Json], list[Path_]]:
    return lambda document: [p for p, v in walk(document) if p and type(v) is kind and p != ("v",)]


def durations_paths(document: Json) -> list[Path_]:
    return [p for p, _ in walk(document) if p and p[-1] == "durations_s"]


def signal_paths(document: Json) -> list[Path_]:
    return [p for p, _ in walk(document) if len(p) > 1 and p[-2] == "signals"]


def identity_paths(document: Json) -> list[Path_]:
    return [(key,) for key in ("factory", "gateway", "machine") if key in document]


def id_paths(document: Json) -> list[Path_]:
    keys = ("factory", "gateway", "session", "machine")
    return [p for p, v in walk(document) if p and p[-1] in keys and isinstance(v, str)]


def samples_list(document: Json) -> list[Path_]:
    return [("samples",)] if "samples" in document else []


def replacing(value: Callable[[Json, st.DataObject], Json]) -> Callable[..., Json]:
    def apply(document: Json, path: Path_, data: st.DataObject) -> Json:
        return replaced(document, path, value(get(document, path), data))

    return apply


def negative_duration(document: Json, path: Path_, data: st.DataObject) -> Json:
    """One state's duration made negative, another's raised: the sum stays the interval."""
    result = copy.deepcopy(document)
    spans = get(result, path)
    state = data.draw(st.sampled_from(sorted(spans)))
    other = data.draw(st.sampled_from([s.value for s in MachineState if s != state]))
    excess = spans[state] + 1.0
    spans[state] -= excess
    spans[other] = spans.get(other, 0.0) + excess
    return result


def repeated_last_sample(document: Json, path: Path_, data: st.DataObject) -> Json:
    result = copy.deepcopy(document)
    result["samples"].append(copy.deepcopy(result["samples"][-1]))
    return result


def last_above_max(stats: Json, data: st.DataObject) -> Json:
    return {**stats, "last": stats["max"] + max(1.0, abs(stats["max"]))}


def other_id(value: Json, data: st.DataObject) -> Json:
    return ("x" if value.startswith("s") else "s") + value[:62]


MUTATIONS = [
    Mutation(
        "unknown field",
        object_paths,
        replacing(lambda obj, _: {**obj, "unknown_field": "?"}),
    ),
    Mutation("number as string", number_paths, replacing(lambda v, _: str(v))),
    Mutation("number as bool", number_paths, replacing(lambda v, d: d.draw(st.booleans()))),
    Mutation(
        "non-finite number",
        number_paths,
        replacing(lambda v, d: d.draw(st.sampled_from([math.nan, math.inf, -math.inf]))),
    ),
    Mutation("string as number", typed_paths(str), replacing(lambda v, d: d.draw(finite))),
    Mutation("bool as number", typed_paths(bool), replacing(lambda v, _: int(v))),
    Mutation("naive timestamp", timestamp_paths, replacing(lambda v, _: naive(v))),
    Mutation("invalid id", id_paths, replacing(lambda v, _: v.upper() + " X")),
    Mutation(
        "other version",
        lambda document: [("v",)],
        replacing(lambda v, d: d.draw(st.sampled_from([0, 2, "1", None, -1, [1], {}]))),
        frozenset({"version"}),
    ),
    Mutation("negative duration", durations_paths, negative_duration),
    Mutation(
        "durations off by a second",
        durations_paths,
        replacing(lambda spans, _: {**spans, "unknown": spans.get("unknown", 0.0) + 1.0}),
    ),
    Mutation("repeated seq", samples_list, repeated_last_sample),
    Mutation("last above max", signal_paths, replacing(last_above_max)),
    Mutation("spoofed identity", identity_paths, replacing(other_id), frozenset({"spoofed"})),
]


def oversize(document: Json) -> bytes:
    return padded(dumps(document), MAX_MESSAGE_BYTES + 1)


@PROPERTY
@given(message=messages, data=st.data())
def test_a_payload_breaking_one_rule_is_refused(message: Message, data: st.DataObject) -> None:
    document = json.loads(encode(message))
    applicable = [m for m in MUTATIONS if m.sites(document)]
    mutation = data.draw(st.sampled_from(applicable), label="mutation")
    site = data.draw(st.sampled_from(mutation.sites(document)), label="site")
    payload = dumps(mutation.apply(document, site, data))
    error = refusal(topic_of(message), payload)
    assert error.reason in mutation.reasons, f"{mutation.name} at {site}: {error}"


@settings(max_examples=20, deadline=None)
@given(message=messages)
def test_a_valid_payload_over_the_size_limit_is_refused(message: Message) -> None:
    error = refusal(topic_of(message), oversize(json.loads(encode(message))))
    assert error.reason == "oversize"


# --- property: garbage in, ContractError out ----------------------------------------------

ALL_TOPICS = [
    samples_topic(FACTORY, GATEWAY),
    status_topic(FACTORY, GATEWAY),
    machine_topic(FACTORY, GATEWAY, "imm-01"),
]
FIELD_NAMES = sorted(
    {
        field
        for model in (
            SampleBatch,
            Sample,
            Counter,
            SignalStats,
            MachineDescription,
            Capability,
            ShiftCalendar,
            Shift,
            Break,
            Maintenance,
            Sharing,
            GatewayStatus,
        )
        for field in model.model_fields
    }
    | {state.value for state in MachineState}
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=30,
)


@PROPERTY
@given(topic=st.sampled_from(ALL_TOPICS), payload=st.binary(max_size=512))
def test_random_bytes_are_refused_with_a_contract_error(topic: str, payload: bytes) -> None:
    assert decode_or_refuse(topic, payload) is None


@PROPERTY
@given(topic=st.sampled_from(ALL_TOPICS), value=json_values)
def test_random_json_is_refused_with_a_contract_error(topic: str, value: Json) -> None:
    assert decode_or_refuse(topic, dumps(value)) is None


@PROPERTY
@given(message=messages, value=json_values, data=st.data())
def test_a_random_subtree_never_raises_anything_but_a_contract_error(
    message: Message, value: Json, data: st.DataObject
) -> None:
    document = json.loads(encode(message))
    path = data.draw(st.sampled_from([p for p, _ in walk(document)]), label="path")
    decode_or_refuse(topic_of(message), dumps(replaced(document, path, value)))


@PROPERTY
@given(levels=st.lists(st.text(max_size=8), max_size=6))
def test_random_topics_never_raise_anything_but_a_contract_error(levels: list[str]) -> None:
    decode_or_refuse("/".join(["kyoso", "v1", *levels]), ONLINE)


# --- calendar -----------------------------------------------------------------------------


def local(zone: str, text: str) -> datetime:
    """A local wall-clock time in ``zone`` (ISO form, no offset) as a UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def local_intervals(zone: str, *pairs: tuple[str, str]) -> list[Interval]:
    return [(local(zone, a), local(zone, b)) for a, b in pairs]


def calendar(zone: str, *shift_list: Shift, **fields: Any) -> ShiftCalendar:
    return ShiftCalendar(timezone=zone, shifts=list(shift_list), **fields)


def shift(days: str, start: str, end: str, *pauses: tuple[str, str]) -> Shift:
    """A shift from compact text: ``shift("mon tue", "06:00", "14:00", ("10:00", "10:20"))``."""
    return Shift(
        days=days.split(),
        start=time.fromisoformat(start),
        end=time.fromisoformat(end),
        breaks=[Break(start=time.fromisoformat(a), end=time.fromisoformat(b)) for a, b in pauses],
    )


def planned(cal: ShiftCalendar, start: str, end: str) -> list[Interval]:
    return cal.planned_intervals(local(cal.timezone, start), local(cal.timezone, end))


def planned_hours(cal: ShiftCalendar, start: str, end: str) -> float:
    return cal.planned_seconds(local(cal.timezone, start), local(cal.timezone, end)) / 3600


TOKYO_ZONE = "Asia/Tokyo"
DAY_SHIFT = shift("mon tue wed thu fri", "06:00", "14:00", ("10:00", "10:20"))
NIGHT_SHIFT = shift("sun mon tue wed thu", "22:00", "06:00", ("02:00", "02:20"))


def test_day_shift_with_a_break() -> None:
    assert planned(calendar(TOKYO_ZONE, DAY_SHIFT), "2026-01-12", "2026-01-13") == (
        local_intervals(
            TOKYO_ZONE,
            ("2026-01-12 06:00", "2026-01-12 10:00"),
            ("2026-01-12 10:20", "2026-01-12 14:00"),
        )
    )


def test_night_shift_crosses_midnight_with_its_break_after_midnight() -> None:
    assert planned(calendar(TOKYO_ZONE, NIGHT_SHIFT), "2026-01-11", "2026-01-12 12:00") == (
        local_intervals(
            TOKYO_ZONE,
            ("2026-01-11 22:00", "2026-01-12 02:00"),
            ("2026-01-12 02:20", "2026-01-12 06:00"),
        )
    )


def test_holiday_stops_the_shifts_starting_on_it_only() -> None:
    cal = calendar(TOKYO_ZONE, DAY_SHIFT, NIGHT_SHIFT, holidays=[date(2026, 1, 14)])
    # Tuesday's night shift runs into the holiday; nothing starts on Wednesday the 14th.
    assert planned(cal, "2026-01-13 12:00", "2026-01-15 12:00") == local_intervals(
        TOKYO_ZONE,
        ("2026-01-13 12:00", "2026-01-13 14:00"),
        ("2026-01-13 22:00", "2026-01-14 02:00"),
        ("2026-01-14 02:20", "2026-01-14 06:00"),
        ("2026-01-15 06:00", "2026-01-15 10:00"),
        ("2026-01-15 10:20", "2026-01-15 12:00"),
    )


def test_maintenance_window_is_cut_out() -> None:
    window = Maintenance(
        start=datetime(2026, 1, 12, 9, tzinfo=TOKYO), end=datetime(2026, 1, 12, 11, tzinfo=TOKYO)
    )
    cal = calendar(TOKYO_ZONE, DAY_SHIFT, maintenance=[window])
    assert planned(cal, "2026-01-12", "2026-01-13") == local_intervals(
        TOKYO_ZONE,
        ("2026-01-12 06:00", "2026-01-12 09:00"),
        ("2026-01-12 11:00", "2026-01-12 14:00"),
    )


def test_adjacent_shifts_merge_and_the_window_clips() -> None:
    late = shift("mon", "14:00", "22:00")
    cal = calendar(TOKYO_ZONE, DAY_SHIFT, late)
    assert planned(cal, "2026-01-12 08:00", "2026-01-12 20:00") == local_intervals(
        TOKYO_ZONE,
        ("2026-01-12 08:00", "2026-01-12 10:00"),
        ("2026-01-12 10:20", "2026-01-12 20:00"),
    )
    for empty in [("10:05", "10:15"), ("22:00", "23:00"), ("05:00", "06:00"), ("12:00", "12:00")]:
        assert planned(cal, *(f"2026-01-12 {t}" for t in empty)) == [], empty


def test_the_shift_in_progress_includes_its_breaks_and_skips_holidays_and_maintenance() -> None:
    window = Maintenance(
        start=datetime(2026, 1, 12, 9, tzinfo=TOKYO), end=datetime(2026, 1, 12, 11, tzinfo=TOKYO)
    )
    cal = calendar(
        TOKYO_ZONE, DAY_SHIFT, NIGHT_SHIFT, holidays=[date(2026, 1, 14)], maintenance=[window]
    )

    def shift_at(moment: str) -> tuple[str, datetime, datetime] | None:
        found = cal.shift_at(local(TOKYO_ZONE, moment))
        return None if found is None else (found[0].name, found[1], found[2])

    day = (
        DAY_SHIFT.name,
        local(TOKYO_ZONE, "2026-01-13 06:00"),
        local(TOKYO_ZONE, "2026-01-13 14:00"),
    )
    assert shift_at("2026-01-13 06:00") == day
    assert shift_at("2026-01-13 10:10") == day  # in its break
    assert shift_at("2026-01-13 14:00") is None
    # Tuesday's night shift runs into Wednesday's holiday; nothing starts on the holiday.
    night = shift_at("2026-01-14 03:00")
    assert night is not None
    assert night[1:] == (
        local(TOKYO_ZONE, "2026-01-13 22:00"),
        local(TOKYO_ZONE, "2026-01-14 06:00"),
    )
    assert shift_at("2026-01-14 08:00") is None
    assert shift_at("2026-01-12 10:00") is None  # planned maintenance
    assert all(t.tzinfo is UTC for t in night[1:])
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.shift_at(datetime(2026, 1, 13, 8))


BERLIN = "Europe/Berlin"


@pytest.mark.parametrize(
    ("the_shift", "start", "end", "hours"),
    [
        pytest.param(shift("sun", "06:00", "14:00"), "2026-03-29", "2026-03-30", 8, id="day mar"),
        pytest.param(shift("sun", "06:00", "14:00"), "2026-10-25", "2026-10-26", 8, id="day oct"),
        pytest.param(shift("sat", "22:00", "06:00"), "2026-03-28", "2026-03-30", 7, id="night mar"),
        pytest.param(shift("sat", "22:00", "06:00"), "2026-10-24", "2026-10-26", 9, id="night oct"),
        pytest.param(shift("sat", "22:00", "06:00"), "2026-03-21", "2026-03-23", 8, id="night"),
        pytest.param(shift("sun", "00:00", "06:00"), "2026-03-29", "2026-03-30", 5, id="early mar"),
        pytest.param(shift("sun", "00:00", "06:00"), "2026-10-25", "2026-10-26", 7, id="early oct"),
    ],
)
def test_shifts_follow_the_wall_clock_over_dst_changes(
    the_shift: Shift, start: str, end: str, hours: float
) -> None:
    assert planned_hours(calendar(BERLIN, the_shift), start, end) == hours


def test_planned_seconds_is_the_sum_of_the_intervals() -> None:
    cal = pinned_description().calendar
    week = ("2026-01-12", "2026-01-19")
    intervals = planned(cal, *week)
    assert cal.planned_seconds(local(TOKYO_ZONE, week[0]), local(TOKYO_ZONE, week[1])) == sum(
        (b - a).total_seconds() for a, b in intervals
    )
    # Three shifts of 7 h 40 min, five days a week: 115 h.
    assert planned_hours(cal, *week) == 115


def test_planned_intervals_need_aware_bounds() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        calendar(TOKYO_ZONE, DAY_SHIFT).planned_intervals(
            datetime(2026, 1, 12), datetime(2026, 1, 13)
        )


def assert_well_formed(intervals: list[Interval], start: datetime, end: datetime) -> None:
    """Sorted, disjoint, non-empty intervals inside ``[start, end)``."""
    for a, b in intervals:
        assert start <= a < b <= end
    for (_, b), (a, _) in itertools.pairwise(intervals):
        assert b < a


DST_WEEKENDS = [date(2026, 3, 6), date(2026, 3, 27), date(2026, 4, 3), date(2026, 10, 23)]
"""Fridays before a DST change in New York, Berlin, Lord Howe (back) and Berlin (back)."""


@st.composite
def windows(draw: st.DrawFn) -> tuple[datetime, datetime, datetime]:
    """Three ordered instants a <= b <= c, often around a DST change."""
    anchor = draw(st.sampled_from(DST_WEEKENDS) | st.dates(date(2026, 1, 1), date(2026, 12, 31)))
    a = datetime.combine(anchor, time(), UTC) + draw(st.timedeltas(timedelta(0), timedelta(days=2)))
    ab, bc = (draw(st.timedeltas(timedelta(0), timedelta(days=4))) for _ in range(2))
    return a, a + ab, a + ab + bc


@PROPERTY
@given(cal=calendars(shifts()), bounds=windows())
def test_planned_time_splits_at_any_point(
    cal: ShiftCalendar, bounds: tuple[datetime, datetime, datetime]
) -> None:
    a, b, c = bounds
    whole = cal.planned_intervals(a, c)
    assert_well_formed(whole, a, c)
    assert merged(cal.planned_intervals(a, b) + cal.planned_intervals(b, c)) == whole
    assert math.isclose(
        cal.planned_seconds(a, c),
        cal.planned_seconds(a, b) + cal.planned_seconds(b, c),
        abs_tol=1e-6,
    )


# --- DST gaps, local times, wire strictness of versions and timestamps --------------------

BERLIN_SPRING = datetime(2026, 3, 29, tzinfo=UTC)  # 02:00-03:00 local does not exist


def test_a_shift_starting_in_a_dst_gap_starts_when_the_clock_jumps() -> None:
    cal = ShiftCalendar(
        timezone="Europe/Berlin",
        shifts=[Shift(days=["sun"], start=time(2, 30), end=time(4))],
    )
    # 02:30 does not exist; the clock jumps from 02:00 CET to 03:00 CEST = 01:00 UTC.
    assert cal.planned_intervals(BERLIN_SPRING, BERLIN_SPRING + timedelta(hours=3)) == [
        (BERLIN_SPRING + timedelta(hours=1), BERLIN_SPRING + timedelta(hours=2))
    ]
    empty = ShiftCalendar(
        timezone="Europe/Berlin", shifts=[Shift(days=["sun"], start=time(2, 30), end=time(3))]
    )
    assert empty.planned_seconds(BERLIN_SPRING, BERLIN_SPRING + timedelta(hours=3)) == 0


def test_a_break_in_a_dst_gap_keeps_its_existing_part() -> None:
    cal = ShiftCalendar(
        timezone="Europe/Berlin",
        shifts=[
            Shift(
                days=["sat"],
                start=time(22),
                end=time(6),
                breaks=[Break(start=time(2, 30), end=time(3, 30))],
            )
        ],
    )
    # 8 h of wall clock, one of which does not exist, minus the 03:00-03:30 left of the break.
    seconds = cal.planned_seconds(
        BERLIN_SPRING - timedelta(days=1), BERLIN_SPRING + timedelta(days=1)
    )
    assert seconds == 6.5 * 3600


@pytest.mark.parametrize(
    ("start", "end", "pause"),
    [
        ("06:00", "14:00", ("05:00", "05:30")),  # before the shift
        ("06:00", "14:00", ("13:30", "14:30")),  # past its end
        ("22:00", "06:00", ("21:00", "23:00")),  # straddles its start
        ("06:00", "14:00", ("10:00", "10:00")),  # empty
    ],
)
def test_a_break_outside_its_shift_is_refused(start: str, end: str, pause: tuple[str, str]) -> None:
    with pytest.raises(ValidationError, match="break"):
        Shift(
            days=["mon"],
            start=time.fromisoformat(start),
            end=time.fromisoformat(end),
            breaks=[Break(start=time.fromisoformat(pause[0]), end=time.fromisoformat(pause[1]))],
        )


def test_shift_times_with_an_offset_are_refused() -> None:
    with pytest.raises(ValidationError, match="without an offset"):
        Shift.model_validate_json('{"days": ["mon"], "start": "22:00:00+09:00", "end": "06:00"}')


STATUS = (
    b'{"v":1,"factory":"f1","gateway":"g1","session":"s1","status":"online",'
    b'"ts":"2026-01-01T00:30:00+01:00","reason":"connected"}'
)


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b'"v":1,', b"", "version"),
        (b'"v":1', b'"v":true', "version"),
        (b'"v":1', b'"v":1.0', "version"),
        (b'"v":1', b'"v":null', "version"),
        (b"2026-01-01T00:30:00+01:00", b"1700000000", "schema"),
        (b"2026-01-01T00:30:00+01:00", b"2026-01-01T00:30+01:00", "schema"),
        (b"2026-01-01T00:30:00+01:00", b"2026-01-01T00:30:00+0100", "schema"),
        (b"2026-01-01T00:30:00+01:00", b"2026-01-01T00:30:00.1234567Z", "schema"),
        (b"2026-01-01T00:30:00+01:00", b"0001-01-01T00:30:00+01:00", "schema"),
        (b"2026-01-01T00:30:00+01:00", b"9999-12-31T23:59:59-01:00", "schema"),
        (b'"reason":"connected"', b'"reason":"shutdown"', "schema"),
    ],
)
def test_wire_versions_timestamps_and_status_reasons_are_strict(
    old: bytes, new: bytes, reason: str
) -> None:
    assert decode("kyoso/v1/f1/g1/status", STATUS) is not None
    with pytest.raises(ContractError) as caught:
        decode("kyoso/v1/f1/g1/status", STATUS.replace(old, new))
    assert caught.value.reason == reason


def test_timestamps_out_of_range_once_in_utc_are_refused() -> None:
    with pytest.raises(ContractError, match="out of range"):
        decode("kyoso/v1/f1/g1/status", STATUS.replace(b"2026", b"0001"))


def test_capability_envelopes_are_positive_and_materials_unique() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        Capability(process=Process.CNC_TURNING, envelope_mm=(100, 0, 50))
    with pytest.raises(ValidationError, match="must not repeat"):
        Capability(process=Process.CNC_TURNING, materials=[Material.STEEL, Material.STEEL])


def test_a_value_cannot_be_both_present_and_missing() -> None:
    sample = {
        "machine": "m1",
        "seq": 1,
        "ts": "2026-01-05T10:00:00Z",
        "interval_s": 10.0,
        "state": "running",
        "durations_s": {"running": 10.0},
        "signals": {"power_kw": {"last": 1.0, "mean": 1.0, "min": 1.0, "max": 1.0}},
        "missing": ["power_kw"],
    }
    with pytest.raises(ValidationError, match="listed as missing"):
        Sample.model_validate(sample)
    sample["missing"] = ["spindle_load_pct"]
    assert Sample.model_validate(sample).missing == ["spindle_load_pct"]
