"""Commissioning: read raw registers once and show every way they could be meant.

``kyoso gateway probe`` prints each 32/64-bit type at each offset in the four word orders,
so a technician can tell a device's types and byte order from values they know.
"""

from dataclasses import dataclass
from typing import Literal

from .modbus import ModbusConnection
from .modbus_decode import (
    BIT_TABLES,
    MAX_BITS_PER_READ,
    MAX_REGISTERS_PER_READ,
    Interpretation,
    ModbusDeviceConfig,
    Table,
    ascii_text,
    format_number,
    interpretations,
)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Raw registers (or bits) read once, with every interpretation of them."""

    endpoint: str
    unit: int
    table: Table
    address: int
    raw: tuple[int, ...]
    interpretations: tuple[Interpretation, ...]
    text: str
    """The registers as ASCII (see :func:`~kyoso.gateway.modbus_decode.ascii_text`)."""


async def probe(
    host: str,
    port: int = 502,
    *,
    unit: int = 1,
    address: int = 0,
    count: int = 1,
    table: Table = "holding",
    transport: Literal["tcp", "rtu_over_tcp"] = "tcp",
    timeout_s: float = 3.0,
) -> ProbeResult:
    """Read ``count`` registers (or bits) once, for commissioning: which type, which word
    order? Raises ValueError for a read the protocol does not allow, ModbusError when the
    device does not answer with data."""
    limit = MAX_BITS_PER_READ if table in BIT_TABLES else MAX_REGISTERS_PER_READ
    if not 1 <= count <= limit or not 0 <= address <= 65536 - count:
        raise ValueError(f"count must be 1-{limit} and the read within addresses 0-65535")
    device = ModbusDeviceConfig(
        transport=transport, host=host, port=port, unit=unit, timeout_s=timeout_s, retries=0
    )
    connection = ModbusConnection(device)
    try:
        raw = await connection.read(unit, table, address, count, timeout_s)
    finally:
        await connection.aclose()
    bits = table in BIT_TABLES
    return ProbeResult(
        endpoint=device.endpoint,
        unit=unit,
        table=table,
        address=address,
        raw=tuple(raw),
        interpretations=() if bits else tuple(interpretations(raw, address)),
        text="" if bits else ascii_text(raw),
    )


def format_probe(result: ProbeResult) -> str:
    """The probe as a person reads it: raw registers with their 16-bit readings, then each
    32/64-bit type at each address in the four word orders, then the ASCII text."""
    last = result.address + len(result.raw) - 1
    lines = [
        f"{result.table} {result.address}-{last} ({len(result.raw)}) "
        f"of {result.endpoint} unit {result.unit}",
        "",
    ]
    if result.table in BIT_TABLES:
        lines.append("address  value")
        lines.extend(f"{result.address + i:>7}  {v}" for i, v in enumerate(result.raw))
        return "\n".join(lines)
    lines.append("address  hex     uint16   int16  ascii")
    for i, word in enumerate(result.raw):
        chars = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in word.to_bytes(2, "big"))
        signed = word - 0x10000 if word & 0x8000 else word
        lines.append(f"{result.address + i:>7}  {word:04X}  {word:>8}  {signed:>6}  {chars}")
    rows: dict[tuple[int, str], dict[str, str]] = {}
    for item in result.interpretations:
        if item.word_order is not None:
            row = rows.setdefault((item.address, item.dtype), {})
            row[item.word_order] = format_number(item.value, item.dtype)
    if rows:
        width = 26
        lines += ["", f"address  type     {'ABCD':<{width}}{'CDAB':<{width}}{'BADC':<{width}}DCBA"]
        for (addr, dtype), row in rows.items():
            cells = "".join(f"{row[o]:<{width - 2}}  " for o in ("ABCD", "CDAB", "BADC"))
            lines.append(f"{addr:>7}  {dtype:<8} {cells}{row['DCBA']}".rstrip())
    lines += ["", f"string: '{result.text}'"]
    return "\n".join(lines)
