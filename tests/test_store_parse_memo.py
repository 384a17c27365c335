"""The stores' reads of descriptions and latest samples parse a row again only when it changed
(kyoso/store/base.py, ParseMemo): the live view reads them every second."""

import asyncio
from pathlib import Path

from kyoso.contract import MachineDescription
from kyoso.store import SqliteStore
from kyoso.store.base import ParseMemo

EXAMPLE = Path(__file__).parent / "contract_examples" / "machine_description.json"


def test_a_row_is_parsed_again_only_when_it_changed() -> None:
    parsed: list[str] = []

    def parse(row: str) -> str:
        parsed.append(row)
        return row.upper()

    memo = ParseMemo(parse)
    assert memo("m1", "a") == "A"
    assert memo("m1", "a") == "A"
    assert memo("m2", "a") == "A"  # another name: its own entry
    assert memo("m1", "b") == "B"
    assert memo("m1", "a") == "A"
    assert parsed == ["a", "a", "b", "a"]


def test_an_unchanged_description_is_the_same_object_and_a_changed_one_is_read(
    tmp_path: Path,
) -> None:
    described = MachineDescription.model_validate_json(EXAMPLE.read_text())

    async def scenario() -> None:
        async with SqliteStore(tmp_path / "store.sqlite3") as store:
            await store.write_description(described)
            [first] = await store.machines(described.factory)
            [again] = await store.machines(described.factory)
            assert again is first
            renamed = described.model_copy(
                update={"name": "renamed", "updated_at": described.updated_at.replace(year=2027)}
            )
            await store.write_description(renamed)
            [changed] = await store.machines(described.factory)
            assert changed == renamed
            assert changed is not first

    asyncio.run(scenario())
