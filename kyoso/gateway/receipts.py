"""Store receipts: how the gateway learns which of its samples the store has.

Each ingest worker publishes, retained on ``kyoso/v1/<factory>/<gateway>/stored/<worker>``,
a ``StoreReceipt``: per session of this gateway, the seq ranges it has written to the store
so far. The publisher subscribes to every worker's receipt (``receipts_filter``) and hands
each message to :class:`ReceiptReader`, which deletes from the outbox every row a receipt
covers. Deleting is for good, so what counts is the union of every receipt ever received: a
worker that publishes fewer ranges after a restart takes nothing back, and several workers
add up.

A receipt the contract refuses (:class:`~kyoso.contract.ContractError`, including one on
this gateway's topic that names another gateway or worker) is logged and counted, never
fatal; an empty retained payload (a receipt withdrawn) confirms nothing.

The gateway's broker login must be allowed to read ``…/stored/+``. Mosquitto grants a
subscription its ACL denies and then delivers nothing, so a missing read right shows only
as samples that stay unconfirmed and are sent again every ``confirm_timeout_s``.
"""

import logging
from dataclasses import dataclass, replace

from kyoso.contract import ContractError, StoreReceipt, decode, receipts_filter

from .outbox import SqliteOutbox

__all__ = ["ReceiptReader", "ReceiptStats"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReceiptStats:
    """Counters for metrics; a snapshot from :attr:`ReceiptReader.stats`."""

    received: int = 0
    """Receipts applied to the outbox."""
    invalid: int = 0
    """Receipts refused: not valid under the contract, or not this gateway's."""
    confirmed_samples: int = 0
    """Outbox rows a receipt covered, deleted."""


class ReceiptReader:
    """Applies one gateway's store receipts to its outbox; use it from one thread."""

    def __init__(self, outbox: SqliteOutbox, factory: str, gateway: str) -> None:
        self.outbox = outbox
        self.topic_filter = receipts_filter(factory, gateway)
        """What to subscribe to: every ingest worker's receipt for this gateway."""
        self._origin = (factory, gateway)
        self._stats = ReceiptStats()

    @property
    def stats(self) -> ReceiptStats:
        return replace(self._stats)

    def apply(self, topic: str, payload: bytes) -> int:
        """Delete the outbox rows the receipt on ``topic`` covers; return how many."""
        if not payload:
            return 0
        try:
            receipt = decode(topic, payload)
            if not isinstance(receipt, StoreReceipt) or (
                (receipt.factory, receipt.gateway) != self._origin
            ):
                raise ContractError("topic", f"{topic[:200]!r} is not a receipt for this gateway")
        except ContractError as exc:
            self._stats.invalid += 1
            log.warning("store receipt on %s refused (%s): %s", topic[:200], exc.reason, exc)
            return 0
        confirmed = sum(self.outbox.confirm(s.session, s.ranges) for s in receipt.sessions)
        self._stats.received += 1
        self._stats.confirmed_samples += confirmed
        log.debug("store receipt of worker %s: %d samples confirmed", receipt.worker, confirmed)
        return confirmed
