"""The capability's tolerance (contract 1.1): an additive change, so descriptions written
before it still decode, and its bounds are refused with a precise message."""

import json
from pathlib import Path
from typing import Any

import pytest

from kyoso.contract import ContractError, MachineDescription, decode, encode
from kyoso.simulators.config import load_factory, shipped_factories

TOPIC = "kyoso/v1/mori-plastics/gw-01/machines/imm-01"
EXAMPLE = Path(__file__).resolve().parent / "contract_examples" / "machine_description.json"


def _description(**capability: Any) -> bytes:
    """The golden description (contract 1.0: no tolerance), its capability changed."""
    document = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    document["capabilities"][0].update(capability)
    return json.dumps(document).encode()


def test_a_description_without_a_tolerance_still_decodes_and_encodes_as_before() -> None:
    payload = EXAMPLE.read_bytes()
    assert b"tolerance_mm" not in payload
    message = decode(TOPIC, payload)
    assert isinstance(message, MachineDescription)
    assert message.capabilities[0].tolerance_mm is None
    assert b"tolerance_mm" not in encode(message)  # what a 1.0 consumer reads, unchanged
    stored = message.model_dump_json().replace(',"tolerance_mm":null', "")
    assert MachineDescription.model_validate_json(stored) == message  # a store's old rows


def test_a_tolerance_decodes_and_round_trips() -> None:
    message = decode(TOPIC, _description(tolerance_mm=0.005))
    assert isinstance(message, MachineDescription)
    assert message.capabilities[0].tolerance_mm == 0.005
    assert decode(TOPIC, encode(message)) == message
    assert b'"tolerance_mm":0.005' in encode(message)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "Input should be greater than or equal to 0.0001"),
        (0.00005, "Input should be greater than or equal to 0.0001"),
        (-0.01, "Input should be greater than or equal to 0.0001"),
        (10.5, "Input should be less than or equal to 10"),
        ("0.01", "Input should be a valid number"),
        (True, "Input should be a valid number"),
    ],
    ids=repr,
)
def test_a_tolerance_out_of_bounds_is_refused_precisely(value: Any, message: str) -> None:
    with pytest.raises(ContractError) as refused:
        decode(TOPIC, _description(tolerance_mm=value))
    assert refused.value.reason == "schema"
    assert str(refused.value) == f"capabilities.0.tolerance_mm: {message}"


def test_the_bounds_themselves_are_accepted() -> None:
    for value in (0.0001, 10):
        message = decode(TOPIC, _description(tolerance_mm=value))
        assert isinstance(message, MachineDescription)
        assert message.capabilities[0].tolerance_mm == value


def test_every_demo_capability_states_its_tolerance() -> None:
    for path in shipped_factories():
        for machine in load_factory(path).machines:
            for capability in machine.capabilities:
                assert capability.tolerance_mm is not None, (path.name, machine.id)
