"""The dead-letter store keeps every refused message with its reason, bounded."""

from pathlib import Path

from kyoso.ingest.deadletter import MAX_PAYLOAD_COPY, DeadLetterStore


def test_letters_are_kept_counted_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "dead.sqlite3"
    store = DeadLetterStore(path)
    first = store.add("kyoso/v1/a/g/samples", "json", "invalid JSON: EOF", b"{")
    store.add_many(
        [
            ("kyoso/v1/a/g/samples", "schema", "samples.0.ts: naive", b'{"v":1}'),
            ("kyoso/v1/b/g/samples", "spoofed", "payload names a/g", b'{"v":1}'),
        ]
    )
    store.close()
    reopened = DeadLetterStore(path)
    assert reopened.counts() == {"json": 1, "schema": 1, "spoofed": 1}
    letter = reopened.get(first)
    assert letter is not None
    assert (letter.topic, letter.reason, letter.payload) == ("kyoso/v1/a/g/samples", "json", b"{")
    assert [x.reason for x in reopened.letters(reason="schema")] == ["schema"]
    assert [x.id for x in reopened.letters(after=first)] == [first + 1, first + 2]
    assert reopened.get(999) is None


def test_giant_payloads_are_kept_bounded_with_their_size(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "dead.sqlite3")
    giant = b"x" * (MAX_PAYLOAD_COPY * 10)
    letter = store.get(store.add("t" * 5000, "oversize", "d" * 5000, giant))
    assert letter is not None
    assert len(letter.payload) == MAX_PAYLOAD_COPY
    assert letter.payload_size == len(giant)
    assert len(letter.topic) == 1024
    assert len(letter.detail) == 2000
