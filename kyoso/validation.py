"""Configuration errors a person can act on: one line per problem, with its location, and
the one YAML loader every configuration file goes through (a model from a file, or a
service's settings from a file overridden by the environment).

A location is ``<file>:<line>:<column>`` for YAML syntax, ``<file>:<line>: <dotted.path>``
for a value the schema refuses (the line of the value's key, or of its list item), and
``<file>: <dotted.path>`` where the file has no line for it (a problem of the whole file).

A technician reads these in their own language: each error carries a :class:`Report`, whose
problems are messages of the catalog (section ``config``; a refusal of pydantic's by its
error ``type``, as ``config.error.<type>`` with the error's context), said in English by
``str()`` and in the command line's language by :func:`explain`. A refusal whose type the
catalog lacks keeps pydantic's English message; so do the reasons our own validators give.
"""

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource
from pydantic_settings.exceptions import SettingsError
from yaml.reader import ReaderError

from kyoso.i18n import DEFAULT, Lang, catalog, text

__all__ = [
    "ConfigError",
    "ConfigModel",
    "FileSettings",
    "Loc",
    "Message",
    "Place",
    "Report",
    "YamlDocument",
    "dotted",
    "error_lines",
    "explain",
    "load_yaml_model",
    "load_yaml_settings",
    "read_yaml",
    "substitute_env",
]

Loc = Sequence[str | int]
"""Where a value is in a document: keys and list indices, as pydantic's ``loc``."""


class ConfigModel(BaseModel):
    """The base of every configuration section: unknown options are errors (a typo is never
    silently ignored), values are frozen once read, and NaN or infinite numbers refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FileSettings(BaseSettings):
    """A service's settings: from a file (passed as keyword arguments by
    :func:`load_yaml_settings`) and the environment, the environment winning."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init arguments; the environment overrides it.
        return env_settings, init_settings


_S = TypeVar("_S", bound=FileSettings)
_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Message:
    """A message of the catalog with its values, said once the language is known; a value
    that is itself a :class:`Message` is said in the same language."""

    key: str
    values: Mapping[str, object] = field(default_factory=dict)

    def text(self, lang: Lang) -> str:
        """The message in ``lang``."""
        values = {k: v.text(lang) if isinstance(v, Message) else v for k, v in self.values.items()}
        return text(self.key, lang, **values)


class Report:
    """Every problem of one configuration, one a line, in either language. ``str()`` is
    English: what a log or a caller that does not choose a language gets."""

    __slots__ = ("problems",)

    def __init__(self, problems: Iterable[Message]) -> None:
        self.problems = tuple(problems)

    def text(self, lang: Lang) -> str:
        """Every problem in ``lang``, one a line."""
        return "\n".join(problem.text(lang) for problem in self.problems)

    def __str__(self) -> str:
        return self.text(DEFAULT)


class ConfigError(ValueError):
    """Settings that cannot be used, with every problem and where it is: raised with a
    :class:`Report`, like every ``error`` class the loaders of this module are given."""


def explain(exc: BaseException, lang: Lang) -> str:
    """What an error says in ``lang``: the :class:`Report` of a configuration error in that
    language, any other error as ``str()`` has it."""
    report = exc.args[0] if len(exc.args) == 1 else None
    return report.text(lang) if isinstance(report, Report) else str(exc)


def dotted(loc: Loc) -> str:
    """``machines.2.source.unit``; ``<root>`` for the whole document."""
    return ".".join(str(part) for part in loc) or "<root>"


Place = tuple[str, Mapping[str, object]]
"""Where a problem is: the catalog key of its frame (``config.at_line``, ...) and the
frame's values; every frame also names the ``field`` and the ``message``."""


def _shown(value: object) -> object:
    """A context value as pydantic writes it in its message: a whole float without ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _refusal(error: ErrorDetails) -> Message | str:
    """What pydantic refused, as ``config.error.<type>`` with the error's context, or
    pydantic's own (English) message for a type the catalog does not have."""
    key = f"config.error.{error['type']}"
    if key not in catalog(DEFAULT):  # tests/test_i18n.py keeps the catalogs' keys the same
        return error["msg"]
    return Message(key, {name: _shown(v) for name, v in error.get("ctx", {}).items()})


def _problem(place: Place, loc: Loc, message: Message | str) -> Message:
    key, values = place
    return Message(key, {**values, "field": dotted(loc), "message": message})


def _report(where: Callable[[Loc], Place], exc: ValidationError) -> Report:
    return Report(
        _problem(where(e["loc"]), e["loc"], _refusal(e)) for e in exc.errors(include_url=False)
    )


def error_lines(source: object, exc: ValidationError) -> Report:
    """``<source>: <dotted.location>: <message>``, one line per error of ``exc``, for values
    that come from elsewhere than a file (``source`` names where: options, a request)."""
    return _report(lambda _: ("config.in_source", {"source": source}), exc)


_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """A YAML file read with its node tree, so that a location can be turned into a line."""

    path: Path
    data: Any
    """The values, as :func:`yaml.safe_load` returns them."""
    root: yaml.Node | None
    """The composed nodes (``None`` for an empty file), carrying their position."""

    def line(self, loc: Loc) -> int | None:
        """The line (from 1) of the value at ``loc``, or of the nearest enclosing value the
        file has: the line of its key in a mapping, of the item in a list. ``None`` for the
        document itself, which is the whole file.

        Parts of ``loc`` with no node are passed over: a missing option leaves the line of
        the mapping it is missing from; a union's tag (``source.modbus.unit``) is not in the
        file. A value merged in (``<<: *anchor``) or reached through an alias is reported
        where it is written, in the anchor, unless the mapping overrides it.
        """
        node, line = self.root, None
        for part in loc:
            if node is None:
                break
            found = _child(node, part)
            if found is not None:
                node, line = found
        return line

    def place(self, loc: Loc) -> Place:
        """``<file>:<line>``, or ``<file>`` when the file has no line for ``loc``."""
        line = self.line(loc)
        if line is None:
            return "config.in_file", {"path": self.path}
        return "config.at_line", {"path": self.path, "line": line}

    def report(self, exc: ValidationError) -> Report:
        """``<file>:<line>: <dotted.location>: <message>``, one line per error of ``exc``."""
        return _report(self.place, exc)


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node, int] | None:
    """The node at ``part`` under ``node`` and the line that shows it, if there is one."""
    if isinstance(node, yaml.SequenceNode):
        if isinstance(part, int) and 0 <= part < len(node.value):
            item: yaml.Node = node.value[part]
            return item, item.start_mark.line + 1
        return None
    if not isinstance(node, yaml.MappingNode):
        return None
    # The last of a repeated key wins, as in the loaded data; a key of the mapping itself
    # beats a merged one. (Loading flattens the merges in place, merged keys first, so the
    # same rule holds whether or not the tree was constructed.)
    own: tuple[yaml.Node, int] | None = None
    merged: tuple[yaml.Node, int] | None = None
    for key, value in node.value:
        if key.tag == _MERGE_TAG:
            if merged is None:
                merged = next(
                    (f for m in _merge_sources(value) if (f := _child(m, part)) is not None), None
                )
        elif isinstance(key, yaml.ScalarNode) and key.value == str(part):
            own = value, key.start_mark.line + 1
    return own or merged


def _merge_sources(value: yaml.Node) -> Iterator[yaml.Node]:
    """The mappings a merge key brings in, the one that wins first: PyYAML lets the last
    of a list win (the merge-key draft says the first; the data is what counts)."""
    if isinstance(value, yaml.SequenceNode):
        yield from reversed(value.value)
    else:
        yield value


def _syntax_error(path: Path, exc: yaml.MarkedYAMLError) -> Message:
    """``<file>:<line>:<column>: <problem> (<context> at <line>:<column>)``."""
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or exc.context or "not valid YAML"
    if exc.problem and exc.context:
        if exc.problem.startswith("but "):  # "expected a single document ..., but found ..."
            message = f"{exc.context}, {exc.problem}"
        elif exc.context_mark is None:
            message = f"{exc.problem} ({exc.context})"
        else:
            context = f"{exc.context_mark.line + 1}:{exc.context_mark.column + 1}"
            message = f"{exc.problem} ({exc.context} at {context})"
    if mark is None:
        return Message("config.syntax", {"path": path, "problem": message})
    return Message(
        "config.syntax_at",
        {"path": path, "line": mark.line + 1, "column": mark.column + 1, "problem": message},
    )


def _failed(error: type[ValueError], problem: Message) -> ValueError:
    return error(Report([problem]))


def read_yaml(path: Path, error: type[ValueError] = ConfigError) -> YamlDocument:
    """Read and parse the YAML file at ``path``, keeping where each value is written;
    ``error`` names the file (and the line and column of a syntax error)."""
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise _failed(error, Message("config.missing", {"path": path})) from exc
    except OSError as exc:
        raise _failed(error, Message("config.unreadable", {"path": path, "error": exc})) from exc
    except UnicodeDecodeError as exc:
        values = {"path": path, "reason": exc.reason, "byte": exc.start}
        raise _failed(error, Message("config.not_utf8", values)) from exc
    try:
        loader = yaml.SafeLoader(content)
    except ReaderError as exc:  # a character YAML does not allow
        line = content.count("\n", 0, exc.position) + 1
        column = exc.position - (content.rfind("\n", 0, exc.position) + 1) + 1
        values = {"path": path, "line": line, "column": column, "reason": exc.reason}
        values["character"] = f"{exc.character:04x}"
        raise _failed(error, Message("config.bad_character", values)) from exc
    loader.name = str(path)
    try:
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise _failed(error, _syntax_error(path, exc)) from exc
    except yaml.YAMLError as exc:
        raise _failed(error, Message("config.syntax", {"path": path, "problem": exc})) from exc
    finally:
        loader.dispose()
    return YamlDocument(path, data, root)


_ENV = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute(data: Any, env: Mapping[str, str]) -> tuple[Any, list[tuple[Loc, str]]]:
    """``data`` with ``${NAME}`` replaced in every string (mapping keys are left alone),
    and each unknown name with the location of its string."""
    unknown: list[tuple[Loc, str]] = []

    def replace(match: re.Match[str]) -> str:
        return "${" + match[2] + "}" if match[1] else env.get(match[2], "")

    def walk(node: Any, loc: tuple[str | int, ...]) -> Any:
        if isinstance(node, str):
            unknown.extend((loc, m[2]) for m in _ENV.finditer(node) if not m[1] and m[2] not in env)
            return _ENV.sub(replace, node)
        if isinstance(node, dict):
            return {key: walk(value, (*loc, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value, (*loc, i)) for i, value in enumerate(node)]
        return node

    return walk(data, ()), unknown


def _unknown(unknown: list[tuple[Loc, str]], where: Callable[[Loc], Place]) -> Report:
    return Report(
        _problem(where(loc), loc, Message("config.unknown_variable", {"name": name}))
        for loc, name in unknown
    )


def substitute_env(data: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Replace ``${NAME}`` in every string of a parsed file by the environment variable.

    ``$${NAME}`` stays literal as ``${NAME}``. Substituting after parsing keeps comments out
    of it and keeps a secret's characters from changing the YAML structure. Unknown names
    are a :class:`ConfigError`, one line per use: ``<location>: unknown environment ...``.
    """
    result, unknown = _substitute(data, os.environ if environ is None else environ)
    if unknown:
        raise ConfigError(_unknown(unknown, lambda _: ("config.in_data", {})))
    return result


def _substituted(
    document: YamlDocument, error: type[ValueError], environ: Mapping[str, str] | None
) -> Any:
    """The document's data with ``${NAME}`` substituted; ``error`` names each unknown name
    at its line."""
    data, unknown = _substitute(document.data, os.environ if environ is None else environ)
    if unknown:
        raise error(_unknown(unknown, document.place))
    return data


def load_yaml_model(
    model: type[_M],
    path: Path,
    error: type[ValueError],
    environ: Mapping[str, str] | None = None,
) -> _M:
    """``model`` validated from the YAML file at ``path``, ``${NAME}`` substituted from
    ``environ`` (default: the process's); ``error`` names the file and every problem (one
    line each, with its line in the file) if it cannot be used."""
    document = read_yaml(path, error)
    data = _substituted(document, error, environ)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(document.report(exc)) from exc


def _from_environment(environment: Mapping[str, Any], loc: Loc) -> bool:
    """Whether the environment set the value at ``loc`` (or a value that holds it)."""
    node: Any = environment
    for part in loc:
        if not isinstance(node, Mapping):
            return True
        if part not in node:
            return False
        node = node[part]
    return not isinstance(node, Mapping)


def load_yaml_settings(
    cls: type[_S],
    path: Path | None,
    env_prefix: str,
    *,
    error: type[ConfigError] = ConfigError,
    environ: Mapping[str, str] | None = None,
) -> _S:
    """``cls`` from the YAML file at ``path`` (if given, ``${NAME}`` substituted from
    ``environ``, default the process's) and the process's environment, whose
    ``<env_prefix>*`` variables override single options; ``error`` lists every problem, at
    its line in the file, or as ``environment (<prefix>*)`` for a value a variable set."""
    document = None if path is None else read_yaml(path, error)
    data: Mapping[str, Any] = {}
    if document is not None and document.data is not None:
        if not isinstance(document.data, dict) or not all(
            isinstance(k, str) for k in document.data
        ):
            raise _failed(error, Message("config.not_mapping", {"path": path}))
        data = _substituted(document, error, environ)
    environment: Place = "config.in_environment", {"prefix": env_prefix}
    try:
        return cls(**data)
    except SettingsError as exc:  # a variable that is not the JSON its option needs
        values = {"prefix": env_prefix, "error": exc}
        raise _failed(error, Message("config.environment_unreadable", values)) from exc
    except ValidationError as exc:
        from_env = EnvSettingsSource(cls)()

        def where(loc: Loc) -> Place:
            if document is None or _from_environment(from_env, loc):
                return environment
            return document.place(loc)

        raise error(_report(where, exc)) from exc
