"""The shared YAML loader: every error names the file and, where the file has one, the line."""

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from kyoso.ingest.config import load_settings
from kyoso.simulators.config import FactoryConfigError, load_factory
from kyoso.validation import ConfigError, load_yaml_model, substitute_env

FACTORIES = Path(__file__).resolve().parent.parent / "kyoso" / "simulators" / "factories"


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: int = Field(ge=1)


class _Machine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    source: _Source


class _Plant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    limits: dict[str, int] = Field(default_factory=dict)
    machines: list[_Machine]


def _errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "plant.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_yaml_model(_Plant, path, ConfigError)
    return str(caught.value).replace(str(tmp_path) + "/", "").splitlines()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "name: x\nmachines: [unclosed\n",
            "plant.yaml:3:1: expected ',' or ']', but got '<stream end>'"
            " (while parsing a flow sequence at 2:11)",
        ),
        (
            "name: x\nmachines:\n  - id: a\n bad: indent\n",
            "plant.yaml:4:2: expected <block end>, but found '<block mapping start>'"
            " (while parsing a block mapping at 1:1)",
        ),
        ("name: x\nlimits: {a: 1}: 2\n", "plant.yaml:2:15: mapping values are not allowed here"),
        ("name: x\nmachines: *nowhere\n", "plant.yaml:2:11: found undefined alias 'nowhere'"),
        (
            "name: x\n---\nname: y\n",
            "plant.yaml:2:1: expected a single document in the stream, but found another document",
        ),
        (
            "name: x\n  \x00\n",
            "plant.yaml:2:3: unacceptable character #x0000: special characters are not allowed",
        ),
    ],
)
def test_a_yaml_syntax_error_names_the_file_line_and_column(
    tmp_path: Path, text: str, error: str
) -> None:
    assert _errors(tmp_path, text) == [error]


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "plant.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"plant\.yaml: not UTF-8 text \(invalid"):
        load_yaml_model(_Plant, path, ConfigError)


def test_a_schema_error_names_the_line_of_its_value(tmp_path: Path) -> None:
    text = """\
# a plant
name: x
limits:
  speed: fast
machines:
  - id: a
    source: {unit: 1}
  - id: b
    source:
      unit: 0
      colour: red
  - id: c
  -
    id: d
    source:
    extra: 1
"""
    assert _errors(tmp_path, text) == [
        "plant.yaml:4: limits.speed: Input should be a valid integer, unable to parse string"
        " as an integer",
        "plant.yaml:10: machines.1.source.unit: Input should be greater than or equal to 1",
        "plant.yaml:11: machines.1.source.colour: Extra inputs are not permitted",
        # a missing option: the line of the mapping it is missing from
        "plant.yaml:12: machines.2.source: Field required",
        # an empty value: its key's line (the parser's mark is on the next token's line)
        "plant.yaml:15: machines.3.source: Input should be a valid dictionary or instance of"
        " _Source",
        "plant.yaml:16: machines.3.extra: Extra inputs are not permitted",
    ]


def test_the_whole_file_has_no_line(tmp_path: Path) -> None:
    assert _errors(tmp_path, "machines: []\n") == ["plant.yaml: name: Field required"]
    assert _errors(tmp_path, "- a list\n") == [
        "plant.yaml: <root>: Input should be a valid dictionary or instance of _Plant"
    ]


def test_aliases_and_merge_keys_point_where_the_value_is_written(tmp_path: Path) -> None:
    text = """\
name: x
limits:
  base: &base {unit: 0}
machines:
  - id: a
    source: *base
  - id: b
    source:
      <<: *base
  - id: c
    source:
      <<: *base
      unit: -1
  - id: d
    source:
      <<: [{unit: 2}, *base]
  - id: e
    source:
      <<: [*base, {unit: 2}]
"""
    # Of a list of merged mappings, PyYAML lets the last win: d gets 0 (from line 3), e 2.
    assert _errors(tmp_path, text) == [
        "plant.yaml:3: limits.base: Input should be a valid integer",
        "plant.yaml:3: machines.0.source.unit: Input should be greater than or equal to 1",
        "plant.yaml:3: machines.1.source.unit: Input should be greater than or equal to 1",
        "plant.yaml:13: machines.2.source.unit: Input should be greater than or equal to 1",
        "plant.yaml:3: machines.3.source.unit: Input should be greater than or equal to 1",
    ]


def test_a_shipped_factory_with_a_broken_anchor(tmp_path: Path) -> None:
    """mori-plastics.yaml shares one behaviour (``&imm``) through merge keys: a bad value
    in the anchor is reported at the anchor for each machine that does not override it,
    and a bad override at the override; the discriminator (``modbus``) has no line of its
    own, so the line is that of the value inside the source."""
    text = (FACTORIES / "mori-plastics.yaml").read_text()
    lines = text.splitlines()
    anchor = lines.index("      mtbf_h: 50") + 1
    override = lines.index("      idle_gap_s: 7200") + 1
    unit = next(i for i, line in enumerate(lines, 1) if "server: imm-03, unit: 1" in line)
    text = text.replace("      mtbf_h: 50", "      mtbf_h: 0")
    text = text.replace("      idle_gap_s: 7200", "      idle_gap_s: -1")
    text = text.replace("server: imm-03, unit: 1", "server: imm-03, unit: 0")
    path = tmp_path / "mori-plastics.yaml"
    path.write_text(text)
    with pytest.raises(FactoryConfigError) as caught:
        load_factory(path)
    assert str(caught.value).splitlines() == [
        f"{path}:{anchor}: machines.0.behaviour.mtbf_h: Input should be greater than 0",
        f"{path}:{override}: machines.1.behaviour.idle_gap_s: Input should be greater than or"
        " equal to 0",
        f"{path}:{anchor}: machines.1.behaviour.mtbf_h: Input should be greater than 0",
        f"{path}:{unit}: machines.2.source.modbus.unit: Input should be greater than or equal to 1",
        f"{path}:{anchor}: machines.3.behaviour.mtbf_h: Input should be greater than 0",
    ]


def test_environment_substitution() -> None:
    data = {"a": "${X}", "b": ["x-${X}-${Y}"], "c": "$${X}", "d": 5}
    assert substitute_env(data, {"X": "1", "Y": "2"}) == {
        "a": "1",
        "b": ["x-1-2"],
        "c": "${X}",
        "d": 5,
    }
    with pytest.raises(ConfigError) as caught:
        substitute_env(data, {})
    assert str(caught.value).splitlines() == [
        "a: unknown environment variable X",
        "b.0: unknown environment variable X",
        "b.0: unknown environment variable Y",
    ]


def test_every_settings_file_takes_secrets_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest's and the API's files substitute ``${NAME}`` as the gateway's does."""
    path = tmp_path / "ingest.yaml"
    path.write_text("influx:\n  username: ingest\n  password: ${KYOSO_TEST_SECRET}\n")
    monkeypatch.setenv("KYOSO_TEST_SECRET", "s3cret: {not yaml}")
    settings = load_settings(path)
    assert settings.influx.password is not None
    assert settings.influx.password.get_secret_value() == "s3cret: {not yaml}"
    monkeypatch.delenv("KYOSO_TEST_SECRET")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value) == (
        f"{path}:3: influx.password: unknown environment variable KYOSO_TEST_SECRET"
    )
