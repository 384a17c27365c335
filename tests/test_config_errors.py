"""The shared YAML loader: every error names the file and, where the file has one, the line,
in English or in the technician's language."""

import re
from datetime import date, datetime, time
from enum import Enum
from ipaddress import IPv4Address
from pathlib import Path
from typing import Literal

import pytest
from pydantic import (
    AnyHttpUrl,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    NaiveDatetime,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)

from kyoso.i18n import catalog
from kyoso.ingest.config import load_settings
from kyoso.simulators.config import FactoryConfigError, load_factory
from kyoso.validation import (
    ConfigError,
    dotted,
    error_lines,
    explain,
    load_yaml_model,
    substitute_env,
)

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


# --- in the technician's language ---------------------------------------------------------


class _Colour(Enum):
    RED = "red"
    BLUE = "blue"


class _Every(BaseModel):
    """A field for each error type the catalog says (``config.error.<type>``), named
    after it; :data:`_REFUSED` gives each a value it refuses."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    missing: int
    greater_than: float = Field(1, gt=0)
    greater_than_equal: float = Field(1, ge=0.5)
    less_than: int = Field(0, lt=3)
    less_than_equal: float = Field(0, le=2.5)
    multiple_of: int = Field(0, multiple_of=5)
    finite_number: float = 0
    string_too_short: str = Field("ab", min_length=2)
    string_too_long: str = Field("", max_length=3)
    string_pattern_mismatch: str = Field("a", pattern="^[a-z]+$")
    too_short: list[int] = Field([1], min_length=1)
    too_long: list[int] = Field([], max_length=2)
    string_type: str = ""
    int_type: StrictInt = 0
    int_parsing: int = 0
    int_from_float: int = 0
    float_type: StrictFloat = 0.0
    float_parsing: float = 0
    bool_type: StrictBool = False
    bool_parsing: bool = False
    dict_type: dict[str, int] = Field(default_factory=dict)
    model_type: _Source | None = None
    list_type: list[int] = Field(default_factory=list)
    literal_error: Literal["tcp", "rtu"] = "tcp"
    enum: _Colour = _Colour.RED
    date_from_datetime_parsing: date | None = None
    date_from_datetime_inexact: date | None = None
    time_parsing: time | None = None
    datetime_from_date_parsing: datetime | None = None
    timezone_aware: AwareDatetime | None = None
    timezone_naive: NaiveDatetime | None = None
    url_parsing: AnyHttpUrl | None = None
    url_scheme: HttpUrl | None = None
    value_error: int = 0

    @field_validator("value_error")
    @classmethod
    def _refuse(cls, value: int) -> int:
        raise ValueError("must be odd")


_REFUSED = {
    "greater_than": 0, "greater_than_equal": 0.25, "less_than": 3, "less_than_equal": 3,
    "multiple_of": 7, "finite_number": float("inf"), "string_too_short": "a",
    "string_too_long": "abcd", "string_pattern_mismatch": "A", "too_short": [],
    "too_long": [1, 2, 3], "string_type": 5, "int_type": "1", "int_parsing": "x",
    "int_from_float": 1.5, "float_type": "1", "float_parsing": "x", "bool_type": "true",
    "bool_parsing": "maybe", "dict_type": [], "model_type": 5, "list_type": 5,
    "literal_error": "udp", "enum": "green", "date_from_datetime_parsing": "2026-13-01",
    "date_from_datetime_inexact": 1.5, "time_parsing": "25:00",
    "datetime_from_date_parsing": "2026-01-01T25:00", "timezone_aware": "2026-01-01T10:00",
    "timezone_naive": "2026-01-01T10:00Z", "url_parsing": "no url", "url_scheme": "ftp://x",
    "value_error": 2, "extra_forbidden": 1,
}  # fmt: skip

_PLURALS = {"string_too_short", "string_too_long", "too_short", "too_long"}
"""Types whose English message pydantic inflects by number ("1 item", "2 items"); the
catalog, which does not, says "item(s)"."""


def _every_error() -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        _Every.model_validate(_REFUSED)
    return caught.value


def test_the_catalog_says_every_error_type_it_has() -> None:
    """Each ``config.error.<type>`` is one pydantic raises for a configuration's value, and
    in English the catalog says what pydantic says."""
    errors = _every_error().errors(include_url=False)
    assert {e["type"] for e in errors} == {
        key.removeprefix("config.error.")
        for key in catalog("en")
        if key.startswith("config.error.")
    }
    lines = error_lines("options", _every_error()).text("en").splitlines()
    for error, line in zip(errors, lines, strict=True):
        said = f"options: {dotted(error['loc'])}: {error['msg']}"
        if error["type"] in _PLURALS:
            said = re.sub(r"(character|item)s?\b", r"\1(s)", said)
        assert line == said


def test_errors_in_japanese(tmp_path: Path) -> None:
    text = "name: x\nlimits:\n  speed: fast\nmachines:\n  - id: a\n    source: {unit: 0, c: 1}\n"
    path = tmp_path / "plant.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_yaml_model(_Plant, path, ConfigError)
    assert explain(caught.value, "ja").splitlines() == [
        f"設定ファイル {path} の 3 行目: limits.speed: 整数にしてください（整数として読めません）",
        f"設定ファイル {path} の 6 行目: machines.0.source.unit: 1 以上の値にしてください",
        f"設定ファイル {path} の 6 行目: machines.0.source.c: この項目は使えません"
        "（項目名の誤りではありませんか）",
    ]
    assert explain(caught.value, "en") == str(caught.value)
    path.write_text("machines: []\n")
    with pytest.raises(ConfigError) as caught:
        load_yaml_model(_Plant, path, ConfigError)
    assert (
        explain(caught.value, "ja")
        == f"設定ファイル {path}: name: 必須の項目です。値を設定してください"
    )


def test_every_error_type_has_japanese() -> None:
    lines = error_lines("options", _every_error()).text("ja").splitlines()
    assert all(re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", line) for line in lines), lines
    assert "options: value_error: 値が正しくありません: must be odd" in lines


def test_a_type_the_catalog_lacks_keeps_pydantics_words() -> None:
    class _Ip(BaseModel):
        address: IPv4Address

    with pytest.raises(ValidationError) as caught:
        _Ip.model_validate({"address": "x"})
    assert str(error_lines("options", caught.value).text("ja")) == (
        "options: address: Input is not a valid IPv4 address"
    )


def test_file_and_syntax_errors_in_japanese(tmp_path: Path) -> None:
    path = tmp_path / "plant.yaml"
    problems = {
        "name: x\nlimits: {a: 1}: 2\n": f"設定ファイル {path} の 2 行 15 文字目: YAML の書き方に"
        "誤りがあります（mapping values are not allowed here）",
        "name: x\n  \x00\n": f"設定ファイル {path} の 2 行 3 文字目: 使えない文字 #x0000 "
        "があります（special characters are not allowed）",
    }
    for content, said in problems.items():
        path.write_text(content)
        with pytest.raises(ConfigError) as caught:
            load_yaml_model(_Plant, path, ConfigError)
        assert explain(caught.value, "ja") == said
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_yaml_model(_Plant, path, ConfigError)
    assert explain(caught.value, "ja").startswith(
        f"設定ファイル {path} が UTF-8 のテキストではありません（9 バイト目: "
    )
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as caught:
        load_yaml_model(_Plant, missing, ConfigError)
    assert (str(caught.value), explain(caught.value, "ja")) == (
        f"{missing}: no such file",
        f"設定ファイル {missing} が見つかりません",
    )


def test_an_unknown_variable_and_the_environment_in_japanese(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text("influx:\n  password: ${KYOSO_TEST_SECRET}\n")
    monkeypatch.delenv("KYOSO_TEST_SECRET", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert explain(caught.value, "ja") == (
        f"設定ファイル {path} の 2 行目: influx.password: "
        "環境変数 KYOSO_TEST_SECRET が設定されていません"
    )
    monkeypatch.setenv("KYOSO_INGEST_BATCH__MAX_SAMPLES", "many")
    path.write_text("{}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert explain(caught.value, "ja").startswith("環境変数 (KYOSO_INGEST_*): batch.max_samples: ")


def test_any_other_error_is_explained_as_it_reads() -> None:
    assert explain(ValueError("plain"), "ja") == "plain"
