"""Store receipts and gaps, on their own: ranges, receipts of several workers, the age of
holes, and replays that are not the sample first taken."""

import random
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kyoso.contract import (
    MAX_RECEIPT_RANGES,
    MachineState,
    Sample,
    SessionReceipt,
    StoreReceipt,
    decode,
)
from kyoso.ingest.receipts import (
    REPLAY_MEMORY,
    Gap,
    GatewayGaps,
    Receipts,
    ReplayGuard,
    SeqRanges,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0.timestamp()

    def __call__(self) -> float:
        return self.now


def test_ranges_merge_what_touches_and_tell_the_holes() -> None:
    ranges = SeqRanges()
    ranges.update([5, 3, 4, 10, 11, 20])
    assert ranges.ranges() == [(3, 5), (10, 11), (20, 20)]
    assert ranges.holes() == [(6, 9), (12, 19)]
    ranges.add(6, 9)
    ranges.add(12, 19)
    assert ranges.ranges() == [(3, 20)]
    assert ranges.holes() == []
    ranges.add(0, 1)
    ranges.add(22, 30)
    ranges.add(2, 2)
    assert ranges.ranges() == [(0, 20), (22, 30)]


def test_a_receipt_tells_what_this_worker_took_of_each_gateway() -> None:
    receipts = Receipts("ingest-1", clock=Clock())
    receipts.taken("f1", "gw-01", "s1", range(0, 100))
    receipts.taken("f1", "gw-01", "s2", [200, 201, 205])
    receipts.taken("f2", "gw-01", "s9", [7])
    due = dict(receipts.due())
    assert set(due) == {"kyoso/v1/f1/gw-01/stored/ingest-1", "kyoso/v1/f2/gw-01/stored/ingest-1"}
    topic = "kyoso/v1/f1/gw-01/stored/ingest-1"
    receipt = decode(topic, due[topic])  # what a gateway reads: valid by the contract
    assert isinstance(receipt, StoreReceipt)
    assert {s.session: s.ranges for s in receipt.sessions} == {
        "s1": [(0, 99)],
        "s2": [(200, 201), (205, 205)],
    }
    assert receipts.due() == []  # nothing new taken since


def test_a_receipt_keeps_the_highest_ranges_when_there_are_too_many() -> None:
    receipts = Receipts("ingest-1", clock=Clock())
    receipts.taken("f1", "gw-01", "s1", range(0, 2 * (MAX_RECEIPT_RANGES + 10), 2))
    [(topic, payload)] = receipts.due()
    receipt = decode(topic, payload)
    assert isinstance(receipt, StoreReceipt)
    ranges = receipt.sessions[0].ranges
    assert len(ranges) == MAX_RECEIPT_RANGES
    assert ranges[-1] == (2 * (MAX_RECEIPT_RANGES + 9), 2 * (MAX_RECEIPT_RANGES + 9))


def _receipt(worker: str, ranges: list[tuple[int, int]], session: str = "s1") -> StoreReceipt:
    return StoreReceipt(
        factory="f1",
        gateway="gw-01",
        worker=worker,
        ts=T0,
        sessions=[SessionReceipt(session=session, ranges=ranges)],
    )


def test_gaps_are_the_holes_no_worker_has_taken_and_age_until_closed() -> None:
    clock = Clock()
    receipts = Receipts("ingest-1", clock=clock)
    receipts.taken("f1", "gw-01", "s1", [0, 1, 2, 8, 9])
    receipts.heard(_receipt("ingest-2", [(3, 4)]))  # another worker took 3 and 4
    assert receipts.gaps() == [Gap("f1", "gw-01", "s1", missing=3, oldest_s=0.0)]
    clock.now += 60
    receipts.taken("f1", "gw-01", "s1", [5])  # part of the hole is replayed
    assert receipts.gaps() == [Gap("f1", "gw-01", "s1", missing=2, oldest_s=60.0)]
    receipts.taken("f1", "gw-01", "s1", [6, 7])
    assert receipts.gaps() == []


def test_a_gateways_gaps_are_due_for_the_store_when_first_known_and_when_they_change() -> None:
    """Summed over the gateway's sessions, the oldest hole's age; not again as it ages."""
    clock = Clock()
    receipts = Receipts("ingest-1", clock=clock)
    receipts.taken("f1", "gw-01", "s1", [0, 1, 5])  # 2 to 4 missing
    receipts.taken("f1", "gw-02", "s3", [0, 1])
    assert receipts.due_gaps() == [
        GatewayGaps("f1", "gw-01", missing=3, oldest_s=0.0, at=T0),
        GatewayGaps("f1", "gw-02", missing=0, oldest_s=0.0, at=T0),  # known: none missing
    ]
    clock.now += 60
    assert receipts.due_gaps() == []  # older holes, the same gaps
    receipts.taken("f1", "gw-01", "s2", [0, 3])  # a new session, with 1 and 2 missing
    later = T0 + timedelta(seconds=60)
    assert receipts.due_gaps() == [GatewayGaps("f1", "gw-01", 5, oldest_s=60.0, at=later)]
    receipts.taken("f1", "gw-01", "s1", [2, 3, 4])  # the oldest hole is replayed
    assert receipts.due_gaps() == [GatewayGaps("f1", "gw-01", 2, oldest_s=0.0, at=later)]
    receipts.heard(_receipt("ingest-2", [(1, 2)], session="s2"))  # another worker took them
    assert receipts.due_gaps() == [GatewayGaps("f1", "gw-01", 0, oldest_s=0.0, at=later)]
    assert receipts.due_gaps() == []


def test_a_restarted_worker_goes_on_from_its_own_retained_receipt() -> None:
    receipts = Receipts("ingest-1", clock=Clock())
    receipts.heard(_receipt("ingest-1", [(0, 99)]))
    receipts.taken("f1", "gw-01", "s1", [100])
    [(_, payload)] = receipts.due()
    receipt = decode("kyoso/v1/f1/gw-01/stored/ingest-1", payload)
    assert isinstance(receipt, StoreReceipt)
    assert receipt.sessions[0].ranges == [(0, 100)]


@pytest.mark.parametrize("dealing", ["alternate", "random"])
def test_workers_of_a_shared_group_see_no_gaps_when_none_are_missing(dealing: str) -> None:
    """The broker deals a session's messages between two workers: each one's own numbers
    alone are hundreds of ranges, more than a receipt holds. The group took them all, so
    neither worker may see a gap, however long the session (here 3,000 messages)."""
    clock = Clock()
    workers = [Receipts("ingest-1", clock=clock), Receipts("ingest-2", clock=clock)]
    deal = random.Random(7)
    for message in range(3000):
        who = message % 2 if dealing == "alternate" else deal.randrange(2)
        workers[who].taken("f1", "gw-01", "s1", range(message * 20, message * 20 + 20))
        if message % 10 == 9:  # receipts go out every interval, to every other worker
            for me, other in (workers, workers[::-1]):
                for topic, payload in me.due():
                    receipt = decode(topic, payload)
                    assert isinstance(receipt, StoreReceipt)
                    other.heard(receipt)
    assert [w.gaps() for w in workers] == [[], []]


def test_a_worker_joining_late_reads_the_groups_receipts_without_false_gaps() -> None:
    """A worker (re)starting hears only the retained receipts: they hold what the group
    took, not one worker's share alone, so the holes between the shares are no gaps."""
    clock = Clock()
    workers = [Receipts("ingest-1", clock=clock), Receipts("ingest-2", clock=clock)]
    retained: dict[str, bytes] = {}  # the broker keeps the last receipt of each topic
    for message in range(2000):
        me, other = workers[message % 2], workers[1 - message % 2]
        me.taken("f1", "gw-01", "s1", [message])
        for topic, payload in me.due():
            retained[topic] = payload
            receipt = decode(topic, payload)
            assert isinstance(receipt, StoreReceipt)
            other.heard(receipt)
    late = Receipts("ingest-3", clock=clock)
    for topic, payload in retained.items():
        receipt = decode(topic, payload)
        assert isinstance(receipt, StoreReceipt)
        late.heard(receipt)
    assert late.gaps() == []


def _sample(seq: int, machine: str = "m1", at: datetime = T0) -> Sample:
    return Sample(
        machine=machine,
        seq=seq,
        ts=at,
        interval_s=10.0,
        state=MachineState.IDLE,
        durations_s={MachineState.IDLE: 10.0},
    )


@pytest.mark.parametrize(
    ("again", "refused"),
    [
        (_sample(5), False),  # the same sample again: a harmless replay
        (_sample(5, at=T0 + timedelta(seconds=10)), True),  # another time under the number
        (_sample(5, machine="m2"), True),  # another machine under the number
        (_sample(6), False),  # a new number
    ],
)
def test_a_number_sent_again_with_another_sample_is_refused(again: Sample, refused: bool) -> None:
    guard = ReplayGuard()
    key = ("f1", "gw-01", "s1")
    assert guard.conflict(key, _sample(5)) is None
    assert (guard.conflict(key, again) is not None) == refused
    assert guard.conflict(("f1", "gw-01", "s2"), again) is None  # another session


def test_the_replay_memory_is_a_few_bytes_a_number_and_bounded() -> None:
    """A regional ingest knows hundreds of sessions: each one's memory of its last
    REPLAY_MEMORY numbers must cost bytes a number, not a Python object each."""
    guard = ReplayGuard()
    key = ("f1", "gw-01", "s1")
    tracemalloc.start()
    try:
        for seq in range(3 * REPLAY_MEMORY):
            assert guard.conflict(key, _sample(seq, machine=f"m{seq % 20}", at=T0)) is None
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 40 * REPLAY_MEMORY  # bytes
    last = 3 * REPLAY_MEMORY - 1
    for seq in (last, last - REPLAY_MEMORY + 1):  # still remembered
        assert guard.conflict(key, _sample(seq, machine="other", at=T0)) is not None
    assert guard.conflict(key, _sample(0, machine="other", at=T0)) is None  # long forgotten


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 40), st.booleans(), st.sampled_from(["m1", "m2"])),
        max_size=300,
    )
)
def test_the_replay_memory_judges_recent_numbers_as_a_full_record_would(
    steps: list[tuple[int, bool, str]],
) -> None:
    """Numbers going up by leaps, and numbers sent again up to half the memory back: the
    ring refuses exactly what a record of every number taken refuses."""
    guard, record = ReplayGuard(memory=64), dict[int, str]()
    key, top = ("f1", "gw-01", "s1"), 0
    for leap, again, machine in steps:
        seq = max(0, top - leap) if again else top + leap
        top = max(top, seq)
        sample = _sample(seq, machine=machine)
        first = record.setdefault(seq, machine)
        assert (guard.conflict(key, sample) is not None) == (first != machine)
