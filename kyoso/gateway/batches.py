"""Outbox rows on the wire: ``SampleBatch`` messages written by joining stored samples."""

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from kyoso.contract import MAX_MESSAGE_BYTES, MAX_SAMPLES_PER_BATCH

from .outbox import OutboxRow

__all__ = ["EncodedBatch", "encode_batches"]


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A ``SampleBatch`` on the wire: its session, its samples' seqs, its JSON."""

    session: str
    seqs: tuple[int, ...]
    payload: bytes


def encode_batches(
    rows: Sequence[OutboxRow],
    *,
    factory: str,
    gateway: str,
    max_samples: int = MAX_SAMPLES_PER_BATCH,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> list[EncodedBatch]:
    """Group rows (in seq order) into batches of one session, ``max_samples``, ``max_bytes``.

    The outbox stores each sample in canonical form, so a batch is written by joining them:
    the bytes equal ``encode(SampleBatch(...))`` of the same samples (a test pins this), at
    no parsing cost. A row too big on its own gets a batch of its own, which the caller
    refuses; no valid sample comes near 256 KiB.
    """
    batches: list[EncodedBatch] = []
    for session, group in itertools.groupby(rows, key=lambda row: row.session):
        # Ids match the contract's id pattern: they need no JSON escaping.
        head = f'{{"v":1,"factory":"{factory}","gateway":"{gateway}","session":"{session}"'
        start = head.encode() + b',"samples":['
        current: list[OutboxRow] = []
        size = len(start) + 1  # plus "]}", less the comma before the first sample
        for row in group:
            if current and (len(current) >= max_samples or size + 1 + len(row.payload) > max_bytes):
                batches.append(_batch(session, start, current))
                current, size = [], len(start) + 1
            current.append(row)
            size += 1 + len(row.payload)
        batches.append(_batch(session, start, current))
    return batches


def _batch(session: str, start: bytes, rows: list[OutboxRow]) -> EncodedBatch:
    payload = start + b",".join(row.payload for row in rows) + b"]}"
    return EncodedBatch(session, tuple(row.seq for row in rows), payload)
