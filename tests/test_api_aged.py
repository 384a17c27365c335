"""The regional answer serialized once per computation of its figures, its data ages written
in per response (kyoso/api/aged.py): the same bytes as serializing it whole, for less."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic_core import to_json

from kyoso.api.aged import AgedBody
from kyoso.api.deps import age_s, figures_tag

NOW = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
ENDS = [NOW - timedelta(seconds=s) for s in (0.25, 7.0, 3600.5)] + [None]


def _body(ages: list[Any]) -> dict[str, Any]:
    """A regional answer's shape, with these data_age_s values."""
    return {
        "as_of": NOW.isoformat(),
        "horizon_h": 24.0,
        "by_process": [{"process": "cnc_turning", "available": 12.5, "reasons": ["x"]}],
        "factories": [
            {"factory": f"f{i}", "data_age_s": age, "offline": age is None, "machines": None}
            for i, age in enumerate(ages)
        ],
    }


@pytest.mark.parametrize("later_s", [0.0, 1.0, 4.999, 123.456])
def test_the_ages_are_written_in_as_a_whole_serialization_would_write_them(
    later_s: float,
) -> None:
    body = AgedBody(_body(list(ENDS)))
    now = NOW + timedelta(seconds=later_s)
    whole = to_json(_body([age_s(end, now) for end in ENDS]))
    assert body.at(now) == whole
    assert json.loads(body.at(now)) == json.loads(whole)
    assert body.tag == figures_tag(whole)


def test_text_that_looks_like_an_age_is_not_taken_for_one() -> None:
    data = _body(list(ENDS))
    data["by_process"][0]["reasons"] = ['"data_age_s":null']
    body = AgedBody(data)
    assert json.loads(body.at(NOW))["by_process"][0]["reasons"] == ['"data_age_s":null']
