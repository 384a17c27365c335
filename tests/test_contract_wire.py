"""The ingest's compiled sample decoder (kyoso/contract/wire.py) and the line built from it.

Sections: the two decoders agree (properties over valid and broken batches, at every edge
the contract's rules turn on), what the stores read of a sample, and the line of a decoded
sample byte for byte the line of before (property).
"""

import copy
import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec
import pytest
import test_contract
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from test_contract import (
    MUTATIONS,
    PROPERTY,
    Json,
    Path_,
    batches,
    dumps,
    get,
    json_values,
    replaced,
    walk,
)

from kyoso.contract import (
    MAX_SAMPLES_PER_BATCH,
    ContractError,
    Counter,
    MachineState,
    Sample,
    SampleBatch,
    decode,
    encode,
    machine_topic,
    samples_topic,
    wire,
)
from kyoso.contract import messages as contract_messages
from kyoso.contract.wire import WireBatch, WireSample, decode_samples, from_model
from kyoso.influx.lineprotocol import LineProtocolError, _plain, interval_ns, sample_point

# --- the two decoders agree -----------------------------------------------------------------

Outcome = WireBatch | tuple[str, str]
"""A decoded batch, or the (reason, message) of the refusal."""


def outcome(topic: str, payload: bytes, decoder: Callable[[str, bytes], object]) -> Outcome:
    try:
        message = decoder(topic, payload)
    except ContractError as exc:
        return exc.reason, str(exc)
    if isinstance(message, SampleBatch):
        return from_model(message)
    assert isinstance(message, WireBatch)
    return message


def typed(value: object) -> object:
    """``value`` with the type of every part spelled out, dict orders included: equal only
    where the decoders made the very same values (60 is not 60.0, nor -0.0 0.0)."""
    if isinstance(value, msgspec.Struct):
        return type(value).__name__, [
            (f, typed(getattr(value, f))) for f in value.__struct_fields__
        ]
    if isinstance(value, dict):
        return [(typed(k), typed(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [typed(v) for v in value]
    return type(value).__name__, repr(value)


def assert_agree(topic: str, payload: bytes) -> None:
    """:func:`decode_samples` and the models: the same values, or the same refusal (reason
    and words); and the compiled path alone takes exactly what the models take (the same
    values), but for the duplicate keys of :func:`has_duplicate_keys`."""
    models = outcome(topic, payload, decode)
    shipped = outcome(topic, payload, decode_samples)
    assert typed(shipped) == typed(models)
    try:
        fast: WireBatch | None = wire._decode(payload)
    except (msgspec.DecodeError, wire._RefusedError):
        fast = None
    try:  # the models on the payload alone (the origin is checked outside the decoders)
        valid = SampleBatch.model_validate_json(payload, strict=True, context=WIRE)
    except ValidationError:
        valid = None
    if fast is not None:
        assert valid is not None, f"compiled: {fast!r:.300}; models: {models!r:.300}"
        assert typed(fast) == typed(from_model(valid))
    else:
        assert valid is None or has_duplicate_keys(payload), f"models: {models!r:.300}"


def has_duplicate_keys(payload: bytes) -> bool:
    """Whether an object of ``payload`` gives a key twice: the models take the last value,
    msgspec checks each, so the compiled path leaves such a batch to the models (a
    leniency not to rely on, docs/contract.md section 5)."""
    found = False

    def pairs(items: list[tuple[str, Json]]) -> dict[str, Json]:
        nonlocal found
        found |= len({key for key, _ in items}) < len(items)
        return dict(items)

    json.loads(payload, object_pairs_hook=pairs)
    return found


@PROPERTY
@given(batch=batches())
def test_the_compiled_path_decodes_every_valid_batch_as_the_models(batch: SampleBatch) -> None:
    topic, payload = samples_topic(batch.factory, batch.gateway), encode(batch)
    models = decode(topic, payload)
    assert isinstance(models, SampleBatch)
    assert typed(wire._decode(payload)) == typed(from_model(models))
    assert_agree(topic, payload)


@PROPERTY
@given(batch=batches(), data=st.data())
def test_the_decoders_agree_on_a_batch_breaking_one_rule(
    batch: SampleBatch, data: st.DataObject
) -> None:
    """The mutations of test_contract.py: wrong types, NaN and infinities, naive timestamps,
    unknown fields, invalid ids, other versions, negative durations, sums off by a second,
    repeated seqs, signals out of order, spoofed identities."""
    document = json.loads(encode(batch))
    mutation = data.draw(st.sampled_from([m for m in MUTATIONS if m.sites(document)]))
    site = data.draw(st.sampled_from(mutation.sites(document)), label=mutation.name)
    assert_agree(
        samples_topic(batch.factory, batch.gateway), dumps(mutation.apply(document, site, data))
    )


IDS: Final[list[str]] = [
    *("", "a", "7", "a" * 63, "a" * 64, "A", "a b", "a,b", "-a", "_a", "a-b", "a_b"),
    *("a\n", "a/b", "é", "\u0663", "a\u00a0", "power_kw", "gw-01"),
]
TIMESTAMPS: Final[list[Json]] = [
    "2026-01-12T23:15:00Z",
    "2026-01-12T23:15:00+09:00",
    "2026-01-12T23:15:00-00:00",
    "2026-01-12T23:15:00.5+00:00",
    "2026-01-12T23:15:00.000001Z",
    "2026-01-12T23:15:00.1234567Z",
    "2026-01-12T23:15:00z",
    "2026-01-12t23:15:00Z",
    "2026-01-12 23:15:00Z",
    "2026-01-12T23:15:00",
    "2026-01-12T23:15Z",
    "2026-01-12T23:15:00+0900",
    "2026-01-12T23:15:00+24:00",
    "2026-13-12T23:15:00Z",
    "2026-02-30T23:15:00Z",
    "2026-01-12T24:00:00Z",
    "2026-01-12T23:59:60Z",
    "0001-01-01T00:00:00+00:01",
    "0001-01-01T00:00:00-00:01",
    "9999-12-31T23:59:59-00:01",
    "9999-12-31T23:59:59+00:01",
    "\u0662\u0660\u0662\u0666-01-12T23:15:00Z",
    "2026-01-12T23:15:00Z\n",
    "2026-01-12",
]
NUMBERS: Final[list[Json]] = [
    *(0, 1, -1, 60, 10**6, 10**6 + 1, 10**9, 10**9 + 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63),
    *(2**64 - 1, 2**64, 2**70, -(2**63) - 1),
    *(0.0, -0.0, 0.5, 1.0, 60.0, 3600.0, 3600.0000001, 1e-320, 1e308, -1e308, 1e19),
]
VALUES: Final[list[Json]] = [
    *(None, True, False, *NUMBERS, *IDS, *TIMESTAMPS, "1", "NaN", "running", "Running"),
    *("bogus", [], {}, [1], ["a"], {"a": 1}, {"delta": 1}, {"running": 60.0}),
    {"last": 1.0, "mean": 1.0, "min": 1.0, "max": 1.0},
]
KEYS: Final[list[str]] = [
    *IDS,
    *("v", "count", "total", "delta", "unknown", "running", "bogus", "seq", "ts", "alarm"),
    "missing",
]
RAW_NUMBERS: Final = [
    *("1e400", "-1e400", "NaN", "Infinity", "-Infinity", "-0", "-0.0", "1E2", "1.0e0"),
    *("4e-400", "1" * 30, "-" + "9" * 25, "0.1", "01", "1.", ".5"),
]
WIRE: Final = contract_messages._WIRE
"""The validation context of a payload read from the wire (``v`` required)."""
RAW = "\x00raw\x00"
"""Stands in a document for raw JSON text, spliced into the payload by :func:`spliced`."""


def spliced(document: Json, text: str) -> bytes:
    """The payload of ``document``, its :data:`RAW` value replaced by ``text``."""
    return dumps(document).replace(json.dumps(RAW).encode(), text.encode())


def sample_paths(document: Json) -> list[Path_]:
    return [("samples", i) for i in range(len(document["samples"]))]


def any_value(document: Json, data: st.DataObject) -> bytes:
    path = data.draw(st.sampled_from([p for p, _ in walk(document) if p]), label="path")
    return dumps(replaced(document, path, data.draw(st.sampled_from(VALUES), label="value")))


def any_key(document: Json, data: st.DataObject) -> bytes:
    objects = [p for p, v in walk(document) if isinstance(v, dict) and v]
    path = data.draw(st.sampled_from(objects), label="object")
    result = copy.deepcopy(document)
    target = get(result, path)
    old = data.draw(st.sampled_from(sorted(target)), label="key")
    new = data.draw(st.sampled_from(KEYS), label="new key")
    target[new] = target.pop(old)
    return dumps(result)


def raw_number(document: Json, data: st.DataObject) -> bytes:
    paths = [p for p, v in walk(document) if isinstance(v, int | float) and p]
    path = data.draw(st.sampled_from(paths), label="path")
    return spliced(replaced(document, path, RAW), data.draw(st.sampled_from(RAW_NUMBERS)))


def duplicate_key(document: Json, data: st.DataObject) -> bytes:
    """A key given twice in one object, the copy first (ignored) or last (it wins)."""
    objects = [p for p, v in walk(document) if isinstance(v, dict) and v]
    path = data.draw(st.sampled_from(objects), label="object")
    target = get(document, path)
    key = data.draw(st.sampled_from(sorted(target)), label="key")
    value = data.draw(st.sampled_from([target[key], *VALUES]), label="value")
    body = json.dumps(target)[1:-1]
    pair = f"{json.dumps(key)}: {json.dumps(value)}"
    text = f"{{{pair}, {body}}}" if data.draw(st.booleans()) else f"{{{body}, {pair}}}"
    return spliced(replaced(document, path, RAW), text)


def sum_off(document: Json, data: st.DataObject) -> bytes:
    path = data.draw(st.sampled_from(sample_paths(document)), label="sample")
    sample = get(document, path)
    off = data.draw(st.sampled_from([-0.0101, -0.01, -0.0099, 0.0, 0.0099, 0.01, 0.0101]))
    spans = {"running": sample["interval_s"] + off, "idle": 0.0}
    return dumps(replaced(document, (*path, "durations_s"), spans))


def at_limit(document: Json, data: st.DataObject) -> bytes:
    """A list or map of a sample at its length limit, or one past it."""
    path = data.draw(st.sampled_from(sample_paths(document)), label="sample")
    field, limit = data.draw(st.sampled_from([("counters", 16), ("signals", 32), ("missing", 64)]))
    size = limit + data.draw(st.sampled_from([0, 1]))
    names = [f"x{i:02d}" for i in range(size)]
    stats = {"last": 1.0, "mean": 1.0, "min": 1.0, "max": 1.0}
    value = {
        "counters": {n: {"delta": 1} for n in names},
        "signals": dict.fromkeys(names, stats),
        "missing": names,
    }[field]
    return dumps(replaced(replaced(document, (*path, "missing"), []), (*path, field), value))


def present_and_missing(document: Json, data: st.DataObject) -> bytes:
    path = data.draw(st.sampled_from(sample_paths(document)), label="sample")
    sample = get(document, path)
    present = sorted([*sample.get("counters", {}), *sample.get("signals", {})]) or ["power_kw"]
    name = data.draw(st.sampled_from([*present, "other_name"]), label="name")
    return dumps(replaced(document, (*path, "missing"), [name]))


def reordered_seqs(document: Json, data: st.DataObject) -> bytes:
    result = copy.deepcopy(document)
    for sample in result["samples"]:
        sample["seq"] = data.draw(st.integers(0, 3), label="seq")
    return dumps(result)


def sample_count(document: Json, data: st.DataObject) -> bytes:
    count = data.draw(st.sampled_from([0, MAX_SAMPLES_PER_BATCH, MAX_SAMPLES_PER_BATCH + 1]))
    template = {
        "machine": "m",
        "ts": "2026-01-12T23:15:00Z",
        "interval_s": 1.0,
        "state": "idle",
        "durations_s": {"idle": 1.0},
    }
    samples = [{**template, "seq": seq} for seq in range(count)]
    return dumps({**document, "samples": samples})


def random_subtree(document: Json, data: st.DataObject) -> bytes:
    path = data.draw(st.sampled_from([p for p, _ in walk(document)]), label="path")
    return dumps(replaced(document, path, data.draw(json_values, label="subtree")))


EDGES: Final[dict[str, Callable[[Json, st.DataObject], bytes]]] = {
    "any value": any_value,
    "any key": any_key,
    "raw number": raw_number,
    "duplicate key": duplicate_key,
    "durations sum at the tolerance": sum_off,
    "length at the limit": at_limit,
    "present and missing": present_and_missing,
    "seqs reordered": reordered_seqs,
    "sample count": sample_count,
    "random subtree": random_subtree,
}


# 250 examples: about 8 s here, the batches' generation most of it. At 500 a run on a CI
# machine crowded by other jobs reached the suite's 300 s timeout, whose interruption left
# Hypothesis's shrinker in an inconsistent state; 20,000 examples run by hand found no
# disagreement.
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(), data=st.data())
def test_the_decoders_agree_at_the_edges(batch: SampleBatch, data: st.DataObject) -> None:
    """Every value, key and number form the contract's rules turn on, at and past each
    limit: accepted by both with the same values, or refused by both with the same words."""
    document = json.loads(encode(batch))
    edge = data.draw(st.sampled_from(sorted(EDGES)), label="edge")
    assert_agree(samples_topic(batch.factory, batch.gateway), EDGES[edge](document, data))


@PROPERTY
@given(payload=st.binary(max_size=300))
def test_the_decoders_agree_on_random_bytes(payload: bytes) -> None:
    assert_agree(samples_topic("f", "g"), payload)


def example_batch() -> SampleBatch:
    payload = (test_contract.EXAMPLES / "sample_batch.json").read_bytes()
    batch = decode(samples_topic(test_contract.FACTORY, test_contract.GATEWAY), payload)
    assert isinstance(batch, SampleBatch)
    return batch


def test_size_topic_and_origin_are_checked_as_the_models_check_them() -> None:
    batch = example_batch()
    payload = encode(batch)
    cases = [
        (samples_topic(batch.factory, batch.gateway), payload + b" " * (256 * 1024)),
        ("kyoso/v1/bad topic", payload),
        (samples_topic(batch.factory, "another-gateway"), payload),
        (samples_topic("another-factory", batch.gateway), payload),
    ]
    for topic, body in cases:
        assert outcome(topic, body, decode_samples) == outcome(topic, body, decode)
    refusals = [outcome(topic, body, decode_samples) for topic, body in cases]
    assert [r[0] if isinstance(r, tuple) else r for r in refusals] == [
        "oversize",
        "topic",
        "spoofed",
        "spoofed",
    ]


def test_a_batch_on_another_kind_of_topic_is_refused() -> None:
    batch = example_batch()
    with pytest.raises(ContractError, match="not a samples topic") as refused:
        decode_samples(machine_topic(batch.factory, batch.gateway, "samples"), encode(batch))
    assert refused.value.reason == "topic"


# --- what the stores read of a sample -------------------------------------------------------


def test_a_wire_sample_reads_as_the_models_sample() -> None:
    """Every field the stores read, of the same value and type; defaults too."""
    batch = example_batch()
    minimal = batch.samples[0].model_copy(
        update={"counters": {}, "signals": {}, "alarm": None, "missing": []}
    )
    topic = samples_topic(batch.factory, batch.gateway)
    for sample in [*batch.samples, minimal]:
        payload = encode(batch.model_copy(update={"samples": [sample]}))
        read = decode_samples(topic, payload).samples[0]
        for name in ("machine", "seq", "ts", "interval_s", "state", "durations_s", "alarm"):
            assert typed(getattr(read, name)) == typed(getattr(sample, name)), name
        assert typed(read.missing) == typed(sample.missing)
        assert {n: (c.delta, c.total) for n, c in read.counters.items()} == {
            n: (c.delta, c.total) for n, c in sample.counters.items()
        }
        assert {n: (x.last, x.mean, x.min, x.max, x.count) for n, x in read.signals.items()} == {
            n: (x.last, x.mean, x.min, x.max, x.count) for n, x in sample.signals.items()
        }


# --- the line of a decoded sample, byte for byte the line of before ------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_INT64_MAX: Final = 2**63 - 1


def _finite(floats: Sequence[float], ints: Sequence[int]) -> None:
    for value in floats:
        if type(value) is not float or value - value != 0.0:
            raise LineProtocolError(f"float field value {value!r} is not a finite float")
    for number in ints:
        if type(number) is not int or not -(2**63) <= number <= _INT64_MAX:
            raise LineProtocolError(f"integer {number!r} does not fit in a signed 64-bit field")


def sample_point_before(
    factory: str, gateway: str, session: str, sample: Sample, *, received_at: int | None = None
) -> str:
    """``sample_point`` as it was before the lean builder (its number checks in
    :func:`_finite`): the oracle of the bytes."""
    counters, signals, missing = sample.counters, sample.signals, sample.missing
    _plain((factory, gateway, session, sample.machine, *counters, *signals, *missing))
    ts = (sample.ts - _EPOCH) // timedelta(microseconds=1) * 1000
    if not -(2**63) + 2 <= ts <= 2**63 - 2:
        raise LineProtocolError(f"timestamp {sample.ts.isoformat()} is outside InfluxDB's range")
    interval, durations = sample.interval_s, sample.durations_s
    running, setup, down, idle, planned, unknown = states = [
        durations.get(state, 0.0) for state in MachineState
    ]
    _finite((interval, *states), ())
    ints = [sample.seq, ts - interval_ns(interval)]
    floats: list[float] = []  # of the signals
    parts = [
        f"samples,gateway={gateway},machine={sample.machine} seq={ints[0]}i,"
        f'session="{session}",interval_s={interval!r},start_ns={ints[1]}i,'
        f'state="{sample.state.value}",running_s={running!r},setup_s={setup!r},'
        f"down_s={down!r},idle_s={idle!r},planned_stop_s={planned!r},unknown_s={unknown!r}"
    ]
    for name in sorted(counters):
        counter = counters[name]
        delta, total = counter.delta, counter.total
        ints.append(delta)
        parts.append(f",{name}_delta={delta}i")
        if total is not None:
            if total > _INT64_MAX:  # a raw 64-bit reading: two's complement (module docstring)
                total -= 2**64
            ints.append(total)
            parts.append(f",{name}_total={total}i")
    for name in sorted(signals):
        stats = signals[name]
        last, mean, low, high, count = stats.last, stats.mean, stats.min, stats.max, stats.count
        floats += (last, mean, low, high)
        ints.append(count)
        parts.append(
            f",{name}_last={last!r},{name}_mean={mean!r},{name}_min={low!r},"
            f"{name}_max={high!r},{name}_count={count}i"
        )
    if (alarm := sample.alarm) is not None:
        ints.append(alarm)
        parts.append(f",alarm={alarm}i")
    if missing:
        parts.append(f',missing="{",".join(missing)}"')
    if received_at is not None:
        ints.append(received_at)
        parts.append(f",received_ns={received_at}i")
    parts.append(f" {ts}")
    _finite(floats, ints)
    return "".join(parts)


def line_or_refusal(
    build: Callable[..., str], sample: object, *args: str, received: int | None
) -> str:
    try:
        return build(*args, sample, received_at=received)
    except LineProtocolError:
        return "<refused>"


# Any year: InfluxDB's range ends in 1677 and 2262, the contract's in 1 and 9999.
moments = st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=st.just(UTC))
edge_moments = st.sampled_from([1677, 1678, 2261, 2262]).flatmap(
    lambda year: st.datetimes(datetime(year, 1, 1), datetime(year, 12, 31), timezones=st.just(UTC))
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=batches(),
    moment=moments | edge_moments | st.none(),
    received=st.none() | st.integers(-(2**63), 2**63 - 1),
)
def test_the_line_of_a_decoded_sample_is_the_line_of_before(
    batch: SampleBatch, moment: datetime | None, received: int | None
) -> None:
    """Byte for byte, decoded (numbers not checked again) or built in code (checked), any
    timestamp, totals beyond 2**63, -0.0 and every float form; refused where it was."""
    if moment is not None:
        timed = [s.model_copy(update={"ts": moment}) for s in batch.samples]
        batch = batch.model_copy(update={"samples": timed})
    read = decode_samples(samples_topic(batch.factory, batch.gateway), encode(batch))
    args = (batch.factory, batch.gateway, batch.session)
    for built, sample in zip(batch.samples, read.samples, strict=True):
        assert type(sample) is WireSample
        before = line_or_refusal(sample_point_before, built, *args, received=received)
        assert line_or_refusal(sample_point, sample, *args, received=received) == before
        assert line_or_refusal(sample_point, built, *args, received=received) == before


@pytest.mark.parametrize(
    "change",
    [
        {"seq": True},
        {"interval_s": math.nan},
        {"durations_s": {MachineState.RUNNING: math.inf}},
        {"alarm": 2**64},
        {"counters": {"good": Counter.model_construct(delta=1, total=2**64)}},
    ],
)
def test_a_sample_built_in_code_has_its_numbers_checked(change: dict[str, object]) -> None:
    """Only the decoder's structs skip the number checks: a sample built otherwise, even
    without validation, is refused rather than written as a line InfluxDB misreads."""
    sample = example_batch().samples[0].model_copy(update=change)
    with pytest.raises(LineProtocolError):
        sample_point("f", "g", "s", sample)


def test_a_decoded_sample_beyond_influxdbs_time_is_refused() -> None:
    """The contract admits years 1 to 9999; a line, only InfluxDB's range."""
    document = test_contract.first_sample(ts="1600-01-01T00:00:00Z")
    batch = decode_samples(
        samples_topic(test_contract.FACTORY, test_contract.GATEWAY), dumps(document)
    )
    with pytest.raises(LineProtocolError, match="outside InfluxDB's range"):
        sample_point("f", "g", "s", batch.samples[0])
