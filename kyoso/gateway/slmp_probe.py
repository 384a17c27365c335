"""``kyoso gateway probe --slmp HOST[:PORT] --devices D0-D99,M0-M63``: read device ranges of
a MELSEC PLC and show what is in them, so a technician writes the configuration without a
manual: every non-zero word (with its hexadecimal and the next word as a low-word-first
32-bit value, MELSEC's order) and every bit that is on, and for a range the PLC refuses, its
end code, e.g. ``0xC056 (beyond the device range)``: the device exists only up to there.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from .slmp import SlmpConnection
from .slmp_config import SlmpEndpointConfig
from .slmp_frames import (
    MAX_BITS_PER_READ,
    MAX_WORDS_PER_READ,
    Device,
    SlmpEndCodeError,
    format_address,
    parse_address,
)


@dataclass(frozen=True, slots=True)
class DeviceRange:
    """``count`` points of ``device`` from ``start``."""

    device: Device
    start: int
    count: int

    def __str__(self) -> str:
        last = format_address(self.device, self.start + self.count - 1)
        first = format_address(self.device, self.start)
        return first if self.count == 1 else f"{first}-{last}"


@dataclass(frozen=True, slots=True)
class RangeResult:
    """What one read of a range gave: its values, or the PLC's refusal."""

    range: DeviceRange
    values: tuple[int, ...] = ()
    refusal: str = ""


def parse_ranges(text: str) -> list[DeviceRange]:
    """``"D0-D99,M0-M63,X1F"`` -> ranges; raises ValueError naming the wrong part."""
    ranges = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first_text, _, last_text = part.partition("-")
        first = parse_address(first_text)
        last = parse_address(last_text) if last_text else first
        if last.device != first.device or last.number < first.number:
            raise ValueError(f"{part!r}: give FIRST-LAST of one device, e.g. D0-D99")
        ranges.append(DeviceRange(first.device, first.number, last.number - first.number + 1))
    if not ranges:
        raise ValueError("give at least one device range, e.g. D0-D99")
    return ranges


def _chunks(ranges: Iterable[DeviceRange]) -> Iterable[DeviceRange]:
    """Each range in reads the frame allows."""
    for r in ranges:
        limit = MAX_BITS_PER_READ if r.device.bits else MAX_WORDS_PER_READ
        for offset in range(0, r.count, limit):
            yield DeviceRange(r.device, r.start + offset, min(limit, r.count - offset))


async def probe(endpoint: SlmpEndpointConfig, ranges: list[DeviceRange]) -> list[RangeResult]:
    """Read every range; a refusal is kept with its end code, a transport failure raises
    :class:`~kyoso.gateway.slmp_frames.SlmpError`."""
    connection = SlmpConnection(endpoint)
    results = []
    try:
        for r in _chunks(ranges):
            try:
                values = await connection.read(r.device, r.start, r.count)
            except SlmpEndCodeError as exc:
                results.append(RangeResult(r, refusal=str(exc)))
                continue
            results.append(RangeResult(r, tuple(values)))
    finally:
        await connection.aclose()
    return results


def format_probe(results: Iterable[RangeResult]) -> str:
    """One line per non-zero point or refused range; ``all 0`` for a quiet range."""
    lines = []
    for result in results:
        r = result.range
        if result.refusal:
            lines.append(f"{r}: refused, {result.refusal}")
            continue
        shown = [(i, v) for i, v in enumerate(result.values) if v]
        if not shown:
            lines.append(f"{r}: all {'OFF' if r.device.bits else '0'}")
        for i, value in shown:
            name = format_address(r.device, r.start + i)
            if r.device.bits:
                lines.append(f"{name:<10} ON")
                continue
            line = f"{name:<10} {value:>6}  0x{value:04X}  int16 {value - (value >> 15 << 16)}"
            if i + 1 < len(result.values):
                pair = value | result.values[i + 1] << 16
                line += f"  uint32 (with next, low word first) {pair}"
            lines.append(line)
    return "\n".join(lines)
