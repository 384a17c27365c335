"""The gateway's durable outbox: numbering, confirmation by store receipts, limits and
policies, refusals, schema migration, and crash safety.

The crash test runs a child process that appends (and delivers) in a loop and prints every
seq that append() returned, SIGKILLs it mid-stream, and checks that the reopened outbox
holds every printed seq that it had not begun to deliver.
"""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from kyoso.cli import main
from kyoso.contract import Counter, MachineState, Sample
from kyoso.gateway.outbox import (
    ConfirmMode,
    FullPolicy,
    OutboxConfig,
    OutboxError,
    OutboxFullError,
    OutboxLockedError,
    SqliteOutbox,
)

T0 = datetime(2026, 1, 12, 23, 15, tzinfo=UTC)


def make_sample(i: int = 0, machine: str = "imm-01") -> Sample:
    """A valid sample; its seq is a placeholder, the outbox assigns the real one."""
    return Sample(
        machine=machine,
        seq=0,
        ts=T0 + timedelta(seconds=10 * i),
        interval_s=10.0,
        state=MachineState.RUNNING,
        durations_s={MachineState.RUNNING: 7.5, MachineState.IDLE: 2.5},
        counters={"good": Counter(delta=1, total=i)},
    )


def open_outbox(tmp_path: Path, session: str | None = None, **config: object) -> SqliteOutbox:
    return SqliteOutbox(
        OutboxConfig.model_validate({"path": tmp_path / "outbox.sqlite3", **config}),
        session=session,
    )


def pending_seqs(outbox: SqliteOutbox) -> list[int]:
    return [row.seq for row in outbox.pending(10**9)]


# --- numbering and storage ------------------------------------------------------------------


def test_append_numbers_consecutively_and_stores_the_canonical_sample(tmp_path: Path) -> None:
    with open_outbox(tmp_path, session="boot-1") as outbox:
        assert outbox.last_seq == -1
        assert outbox.append([make_sample(0), make_sample(1, "blow-01")]) == [0, 1]
        assert outbox.append([]) == []
        assert outbox.append([make_sample(2)]) == [2]
        rows = outbox.pending(10)
        assert [r.seq for r in rows] == [0, 1, 2]
        assert {r.session for r in rows} == {"boot-1"}
        for row, i in zip(rows, [0, 1, 2], strict=True):
            expected = make_sample(i, "blow-01" if i == 1 else "imm-01").model_copy(
                update={"seq": i}
            )
            # Byte-for-byte the canonical form, so a replay re-sends exactly what was sent.
            assert row.payload == expected.model_dump_json(exclude_none=True).encode()
            assert Sample.model_validate_json(row.payload, strict=True) == expected
        assert outbox.depth() == 3
        assert outbox.pending_bytes == sum(len(r.payload) for r in rows)
        assert outbox.last_seq == 2


def test_sequence_continues_across_reopen_and_rows_keep_their_session(tmp_path: Path) -> None:
    with open_outbox(tmp_path, session="boot-1") as outbox:
        outbox.append([make_sample(i) for i in range(4)])
        outbox.mark_delivered([0, 1, 2, 3])  # even an empty outbox must not restart at 0
        outbox.append([make_sample(4)])
    with open_outbox(tmp_path) as outbox:
        assert outbox.session != "boot-1"  # a fresh session id per open (per process start)
        assert outbox.depth() == 1
        assert outbox.append([make_sample(5)]) == [5]
        assert [(r.seq, r.session) for r in outbox.pending(10)] == [
            (4, "boot-1"),
            (5, outbox.session),
        ]


def test_pending_reads_windows_in_seq_order(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox:
        outbox.append([make_sample(i) for i in range(10)])
        outbox.mark_delivered([3, 4])
        assert pending_seqs(outbox) == [0, 1, 2, 5, 6, 7, 8, 9]
        assert [r.seq for r in outbox.pending(3)] == [0, 1, 2]
        assert [r.seq for r in outbox.pending(3, after=2)] == [5, 6, 7]
        assert [r.seq for r in outbox.pending(10, after=0, through=5)] == [1, 2, 5]


def test_mark_delivered_deletes_only_pending_rows(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox:
        outbox.append([make_sample(i) for i in range(5)])
        assert outbox.mark_delivered([1, 3, 99]) == 2
        assert outbox.mark_delivered([1]) == 0  # a duplicate PUBACK changes nothing
        assert pending_seqs(outbox) == [0, 2, 4]
        assert outbox.depth() == 3
        assert outbox.pending_bytes == sum(len(r.payload) for r in outbox.pending(10))


# --- sent, confirmed by a store receipt, due again --------------------------------------------


def test_a_sent_row_stays_until_a_receipt_of_its_session_covers_it(tmp_path: Path) -> None:
    with open_outbox(tmp_path, session="boot-1") as outbox:
        assert outbox.config.confirm is ConfirmMode.STORE  # the default
        outbox.append([make_sample(i) for i in range(10)])
        assert outbox.mark_sent([0, 1, 2, 3, 4, 5, 42], at=1000.0) == 6
        assert outbox.depth() == 10  # a PUBACK deletes nothing
        assert outbox.unconfirmed() == 6
        rows = outbox.pending(10)  # without `now`: every row, sent or not
        assert [(r.seq, r.sent_at) for r in rows] == [(s, 1000.0) for s in range(6)] + [
            (s, None) for s in range(6, 10)
        ]
        assert outbox.confirm("boot-2", [(0, 100)]) == 0  # another session's numbers
        assert outbox.confirm("boot-1", [(0, 2), (4, 7)]) == 7
        assert outbox.confirm("boot-1", [(0, 2)]) == 0  # a receipt repeated changes nothing
        assert pending_seqs(outbox) == [3, 8, 9]
        assert outbox.depth() == 3
        assert outbox.unconfirmed() == 1  # seq 3
        assert outbox.pending_bytes == sum(len(r.payload) for r in outbox.pending(10))
    with open_outbox(tmp_path) as outbox:  # sent_at and the count are persisted
        assert outbox.unconfirmed() == 1
        assert [(r.seq, r.sent_at) for r in outbox.pending(10)] == [
            (3, 1000.0),
            (8, None),
            (9, None),
        ]


def test_pending_at_a_moment_offers_rows_never_sent_or_unconfirmed_too_long(
    tmp_path: Path,
) -> None:
    with open_outbox(tmp_path, confirm_timeout_s=60) as outbox:
        outbox.append([make_sample(i) for i in range(6)])
        outbox.mark_sent([0, 1], at=1000.0)
        outbox.mark_sent([2, 3], at=1030.0)
        assert [r.seq for r in outbox.pending(10, now=1059.0)] == [4, 5]
        assert [r.seq for r in outbox.pending(10, now=1060.0)] == [0, 1, 4, 5]
        assert [r.seq for r in outbox.pending(10, now=1090.0)] == [0, 1, 2, 3, 4, 5]
        assert [r.seq for r in outbox.pending(2, after=0, through=4, now=1060.0)] == [1, 4]
        outbox.mark_sent([0], at=1060.0)  # sent again: its time starts over
        assert outbox.unconfirmed() == 4
        assert [r.seq for r in outbox.pending(10, now=1090.0)] == [1, 2, 3, 4, 5]
        # When the next sent row becomes due, after a given moment.
        assert outbox.next_due(after=0.0) == 1060.0  # seq 1
        assert outbox.next_due(after=1060.0) == 1090.0  # seqs 2 and 3
        assert outbox.next_due(after=1090.0) == 1120.0  # seq 0
        assert outbox.next_due(after=1120.0) is None
        outbox.confirm(outbox.session, [(0, 5)])
        assert outbox.next_due(after=0.0) is None


def test_the_unconfirmed_count_follows_every_way_out(tmp_path: Path) -> None:
    with open_outbox(tmp_path, max_rows=6) as outbox:
        outbox.append([make_sample(i) for i in range(6)])
        outbox.mark_sent(range(6), at=1.0)
        assert outbox.unconfirmed() == 6
        outbox.mark_refused([0], "Not authorized (0x87)")  # refused when sent again
        assert outbox.unconfirmed() == 5
        outbox.mark_delivered([1])  # confirm: broker
        assert outbox.unconfirmed() == 4
        outbox.append([make_sample(i) for i in range(6, 10)])  # drops seqs 2 and 3
        assert outbox.dropped == 2
        assert outbox.unconfirmed() == 2
        assert outbox.requeue_refused() == 1  # back, never sent since
        assert outbox.unconfirmed() == 2
        assert [(r.seq, r.sent_at) for r in outbox.pending(10)] == [
            (0, None),
            (4, 1.0),
            (5, 1.0),
            (6, None),
            (7, None),
            (8, None),
            (9, None),
        ]
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as db:
        assert db.execute("SELECT count(sent_at) FROM outbox").fetchone()[0] == 2


# The outbox as the previous release wrote it (schema version 1).
_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY, session TEXT NOT NULL, payload BLOB NOT NULL,
    appended_at REAL NOT NULL);
CREATE TABLE refused (
    seq INTEGER PRIMARY KEY, session TEXT NOT NULL, payload BLOB NOT NULL,
    appended_at REAL NOT NULL, reason TEXT NOT NULL, refused_at REAL NOT NULL);
CREATE TABLE dropped (
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, count INTEGER NOT NULL,
    bytes INTEGER NOT NULL, dropped_at REAL NOT NULL);
INSERT INTO meta VALUES ('next_seq', 3), ('dropped', 4), ('rejected', 0), ('refused', 1);
PRAGMA user_version = 1;
"""


def test_an_outbox_of_schema_version_1_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    payloads = [_v1_payload(seq) for seq in range(3)]
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(_SCHEMA_V1)
        db.executemany(
            "INSERT INTO outbox VALUES (?, 'boot-0', ?, 1.0)",
            [(seq, payloads[seq]) for seq in (0, 2)],
        )
        db.execute("INSERT INTO refused VALUES (1, 'boot-0', ?, 1.0, 'Quota exceeded (0x97)', 2.0)",
                   (payloads[1],))  # fmt: skip
        db.commit()
    with open_outbox(tmp_path) as outbox:
        # Every pending row of version 1 had no PUBACK yet: never sent.
        assert [(r.seq, r.session, r.payload, r.sent_at) for r in outbox.pending(10)] == [
            (0, "boot-0", payloads[0], None),
            (2, "boot-0", payloads[2], None),
        ]
        assert (outbox.depth(), outbox.unconfirmed(), outbox.last_seq) == (2, 0, 2)
        assert (outbox.dropped, outbox.refused_total) == (4, 1)
        assert outbox.append([make_sample(3)]) == [3]
        assert outbox.mark_sent([0, 3], at=5.0) == 2
        assert outbox.confirm("boot-0", [(0, 0)]) == 1
        assert outbox.requeue_refused() == 1
        assert [(r.seq, r.sent_at) for r in outbox.pending(10)] == [
            (1, None),
            (2, None),
            (3, 5.0),
        ]
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with open_outbox(tmp_path) as outbox:  # opening a migrated file again changes nothing
        assert (outbox.depth(), outbox.unconfirmed()) == (3, 1)


def test_an_outbox_of_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "outbox.sqlite3")) as db:
        db.execute("PRAGMA user_version = 3")
    with pytest.raises(OutboxError, match="unknown outbox schema version 3"):
        open_outbox(tmp_path)


def _v1_payload(seq: int) -> bytes:
    sample = make_sample(seq).model_copy(update={"seq": seq})
    return sample.model_dump_json(exclude_none=True).encode()


# --- refused --------------------------------------------------------------------------------


def test_refused_rows_are_kept_counted_and_can_be_requeued(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox:
        outbox.append([make_sample(i) for i in range(4)])
        assert outbox.mark_refused([1, 2, 42], "Not authorized (0x87)") == 2
        assert pending_seqs(outbox) == [0, 3]  # never published again...
        refused = outbox.refused()
        assert [(r.seq, r.reason) for r in refused] == [
            (1, "Not authorized (0x87)"),
            (2, "Not authorized (0x87)"),
        ]
        assert Sample.model_validate_json(refused[0].payload).seq == 1  # ...never deleted
        assert outbox.refused_total == 2
    with open_outbox(tmp_path) as outbox:
        assert outbox.refused_total == 2  # persisted
        assert outbox.requeue_refused([2]) == 1
        assert pending_seqs(outbox) == [0, 2, 3]
        assert outbox.requeue_refused() == 1
        assert pending_seqs(outbox) == [0, 1, 2, 3]
        assert outbox.refused() == []
        assert outbox.depth() == 4


# --- limits and policies --------------------------------------------------------------------


def test_drop_oldest_counts_and_records_the_dropped_range(tmp_path: Path) -> None:
    with open_outbox(tmp_path, max_rows=5) as outbox:
        assert outbox.config.policy is FullPolicy.DROP_OLDEST  # the default
        outbox.append([make_sample(i) for i in range(5)])
        outbox.mark_delivered([1])  # delivered rows inside a dropped range are not counted
        assert outbox.append([make_sample(i) for i in range(5, 8)]) == [5, 6, 7]
        assert pending_seqs(outbox) == [3, 4, 5, 6, 7]
        assert outbox.dropped == 2
        [dropped] = outbox.dropped_ranges()
        assert (dropped.first_seq, dropped.last_seq, dropped.count) == (0, 2, 2)
        assert dropped.bytes > 0
        # One call bigger than the whole outbox keeps its newest samples.
        assert outbox.append([make_sample(i) for i in range(8, 15)]) == list(range(8, 15))
        assert pending_seqs(outbox) == [10, 11, 12, 13, 14]
        assert outbox.dropped == 2 + 5 + 2
        assert [(d.first_seq, d.last_seq, d.count) for d in outbox.dropped_ranges()] == [
            (0, 2, 2),
            (3, 9, 7),
        ]
    with open_outbox(tmp_path, max_rows=5) as outbox:
        assert outbox.dropped == 9  # persisted
        assert outbox.depth() == 5


def test_drop_oldest_also_applies_the_byte_limit(tmp_path: Path) -> None:
    size = len(make_sample(0).model_dump_json(exclude_none=True))  # seq 0..9: same length
    with open_outbox(tmp_path, max_bytes=max(1024, 4 * size + size // 2)) as outbox:
        limit = outbox.config.max_bytes // size
        outbox.append([make_sample(i) for i in range(limit + 3)])
        assert outbox.depth() == limit
        assert outbox.pending_bytes <= outbox.config.max_bytes
        assert outbox.dropped == 3
        assert pending_seqs(outbox)[0] == 3


def test_reject_new_stores_nothing_of_the_call_and_counts_it(tmp_path: Path) -> None:
    with open_outbox(tmp_path, max_rows=3, policy="reject_new") as outbox:
        assert outbox.append([make_sample(0), make_sample(1)]) == [0, 1]
        with pytest.raises(OutboxFullError, match="rejected 2 new samples"):
            outbox.append([make_sample(2), make_sample(3)])
        assert pending_seqs(outbox) == [0, 1]
        assert outbox.rejected == 2
        assert outbox.dropped == 0
        assert outbox.append([make_sample(2)]) == [2]  # rejected samples used no seq
        outbox.mark_delivered([0])
        assert outbox.append([make_sample(3)]) == [3]
    with open_outbox(tmp_path, max_rows=3, policy="reject_new") as outbox:
        assert outbox.rejected == 2


# --- configuration, locking, concurrency ----------------------------------------------------


def test_config_is_strict_frozen_and_documented() -> None:
    with pytest.raises(ValidationError):
        OutboxConfig.model_validate({"max_row": 10})
    with pytest.raises(ValidationError):
        OutboxConfig.model_validate({"policy": "drop_newest"})
    with pytest.raises(ValidationError):
        OutboxConfig.model_validate({"confirm": "ingest"})
    with pytest.raises(ValidationError):
        OutboxConfig.model_validate({"confirm_timeout_s": 0})
    config = OutboxConfig()
    assert (config.confirm, config.confirm_timeout_s) == (ConfirmMode.STORE, 60.0)
    with pytest.raises(ValidationError):
        config.max_rows = 5  # type: ignore[misc]
    for name, field in OutboxConfig.model_fields.items():
        assert field.description, name
        assert not field.is_required(), name


@pytest.mark.parametrize(("synchronous", "code"), [("full", 2), ("normal", 1)])
def test_database_is_wal_with_the_configured_synchronous(
    tmp_path: Path, synchronous: str, code: int
) -> None:
    with open_outbox(tmp_path, synchronous=synchronous) as outbox:
        assert outbox._db.execute("PRAGMA synchronous").fetchone()[0] == code
        outbox.append([make_sample(0)])
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_only_one_writer_may_open_an_outbox(tmp_path: Path) -> None:
    with open_outbox(tmp_path), pytest.raises(OutboxLockedError):
        open_outbox(tmp_path)
    with open_outbox(tmp_path) as again:  # released on close
        assert again.depth() == 0


def test_appends_from_several_threads_get_unique_consecutive_seqs(tmp_path: Path) -> None:
    got: list[int] = []
    got_lock = threading.Lock()
    with open_outbox(tmp_path, synchronous="normal") as outbox:

        def produce(machine: str) -> None:
            for i in range(100):
                seqs = outbox.append([make_sample(i, machine)] * (1 + i % 3))
                with got_lock:
                    got.extend(seqs)
                if i % 4 == 0:
                    outbox.mark_delivered(seqs[:1])

        threads = [threading.Thread(target=produce, args=(f"m{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(got) == list(range(len(got)))
        assert outbox.depth() == len(got) - 4 * 25
        assert outbox.depth() == len(outbox.pending(10**6))


# --- crash safety ---------------------------------------------------------------------------

CHILD = """
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[3])
from test_gateway_outbox import make_sample
from kyoso.gateway.outbox import OutboxConfig, SqliteOutbox

outbox = SqliteOutbox(OutboxConfig(path=Path(sys.argv[1]), synchronous=sys.argv[2]))
print("ready", outbox.last_seq, flush=True)
i = 0
while True:
    seqs = outbox.append([make_sample(i, "imm-01")] * (1 + i % 4))
    print("A", *seqs, flush=True)
    if i % 3 == 0:
        print("d", seqs[0], flush=True)  # about to deliver: may be gone, or not
        outbox.mark_delivered(seqs[:1])
        print("D", seqs[0], flush=True)
    i += 1
"""


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_sigkill_mid_stream_loses_nothing_that_append_returned(
    tmp_path: Path, synchronous: str
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    database = tmp_path / "outbox.sqlite3"
    appended: set[int] = set()
    delivering: set[int] = set()  # mark_delivered() called; it may not have returned
    delivered: set[int] = set()  # mark_delivered() returned
    for round_ in range(3):
        child = subprocess.Popen(
            [sys.executable, str(script), str(database), synchronous, str(Path(__file__).parent)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        ready = child.stdout.readline().split()
        assert ready[0] == "ready", ready
        # Each run continues the sequence of the previous, killed one.
        assert int(ready[1]) >= max(appended, default=-1)
        # Complete lines only: a line cut short by the kill was never acknowledged.
        printed: list[str] = []
        target = 150 + 70 * round_
        while len(printed) < target:
            line = child.stdout.readline()
            assert line.endswith("\n"), f"child stopped early: {line!r}"
            printed.append(line)
        os.kill(child.pid, signal.SIGKILL)  # while it is appending as fast as it can
        printed += child.stdout.readlines()
        child.wait()
        assert child.returncode == -signal.SIGKILL
        for line in printed:
            if line.endswith("\n"):
                kind, *numbers = line.split()
                got = {"A": appended, "d": delivering, "D": delivered}[kind]
                got.update(int(n) for n in numbers)
    assert len(appended) > 300
    with sqlite3.connect(database) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with SqliteOutbox(OutboxConfig(path=database)) as outbox:
        still = set(pending_seqs(outbox))
        assert appended - delivering <= still, sorted(appended - delivering - still)[:10]
        assert not (delivered & still)
        assert len(delivering - delivered) <= 3  # at most the one cut short in each run
        assert outbox.append([make_sample(0)])[0] > max(appended)


# --- the operator's command -------------------------------------------------------------------


def test_the_outbox_command_shows_refused_and_dropped_and_requeues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = Path(__file__).resolve().parent.parent / "kyoso" / "gateway" / "gateway.example.yaml"
    config = yaml.safe_load(example.read_text())
    config["outbox"] = {"path": str(tmp_path / "outbox.sqlite3"), "max_rows": 3}
    config["broker"]["password"] = "not-used"  # noqa: S105 (the broker is not reached)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with SqliteOutbox(OutboxConfig(path=tmp_path / "outbox.sqlite3", max_rows=3)) as outbox:
        outbox.append([make_sample(i) for i in range(5)])  # 0 and 1 dropped
        outbox.mark_refused([3], "Not authorized (0x87)")
        outbox.mark_sent([4], at=1000.0)
        assert main(["gateway", "--config", str(path), "outbox"]) == 1  # in use
        assert "in use by a running gateway: stop it first" in capsys.readouterr().err
    assert main(["gateway", "--config", str(path), "outbox"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == (
        f"{tmp_path / 'outbox.sqlite3'}: 2 pending (1 sent, awaiting a store receipt), last seq 4"
    )
    assert shown[1] == "since it was made: 1 refused, 2 dropped, 0 rejected"
    assert shown[2].startswith("refused seq 3 (session ")
    assert shown[2].endswith(": Not authorized (0x87)")
    assert shown[3] == "dropped 2 samples of seq 0-1"
    assert main(["gateway", "--config", str(path), "outbox", "requeue", "3"]) == 0
    assert capsys.readouterr().out.startswith("1 refused samples put back")
    with SqliteOutbox(OutboxConfig(path=tmp_path / "outbox.sqlite3")) as outbox:
        assert pending_seqs(outbox) == [2, 3, 4]
