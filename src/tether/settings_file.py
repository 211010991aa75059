"""Reading the configuration as a person meets it: a misspelt key, a TOML mistake or a bad value is one line.

:func:`load_settings` reads the TOML file and the environment into :class:`~tether.settings.Settings`. Unknown keys in
the file are errors naming the file, the line and the closest valid name (pydantic would ignore them in nested
tables, so a misspelt ``api_key_env`` would start a server that sends no key). Unknown ``TETHER_*`` variables are only
warnings: the environment is shared with other programs, which may use the same prefix.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from tether.settings import Settings

ENV_PREFIX = "TETHER_"

KeyPath = tuple[str | int, ...]


class ConfigError(Exception):
    """A configuration mistake, said in one line: what is wrong, where, and how to fix it."""


@dataclass(frozen=True, slots=True)
class UnknownKey:
    path: KeyPath
    closest: str | None

    @property
    def name(self) -> str:
        return str(self.path[-1])


def load_settings(config_file: Path | None, environ: Mapping[str, str]) -> Settings:
    """The settings from ``config_file`` (if any) and ``TETHER_*`` variables, or a :class:`ConfigError`.

    Raises:
        ConfigError: on a missing or unreadable file, a TOML syntax error, an unknown key or an invalid value.
    """
    text = None
    if config_file is not None:
        try:
            text = config_file.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot read the config file {config_file}: {error.strerror or error}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{config_file}: the config file is not UTF-8 text") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{config_file}: TOML syntax error: {error}") from None
        for unknown in unknown_keys(Settings, data):
            raise ConfigError(_unknown_key_message(config_file, text, unknown))
    try:
        return Settings.load(config_file)
    except ValidationError as error:
        raise ConfigError(_validation_message(config_file, text, error)) from None
    except SettingsError as error:  # a TETHER_* variable of a table or list setting that is not JSON
        raise ConfigError(_environment_message(error)) from None


def unknown_keys(model: type[BaseModel], data: Mapping[str, Any], path: KeyPath = ()) -> Iterator[UnknownKey]:
    """Every key of ``data`` (recursively, through nested models, their maps and lists) that ``model`` lacks."""
    fields = model.model_fields
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            yield UnknownKey((*path, key), closest_name(key, fields))
            continue
        yield from _unknown_in_value(field.annotation, value, (*path, key))


def unknown_env_warnings(environ: Mapping[str, str]) -> list[str]:
    """One warning for each ``TETHER_*`` variable that names no setting, with the closest valid variable."""
    warnings = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        closest = _env_closest(Settings, parts)
        if closest is None:
            continue
        suggestion = f" (did you mean {closest}?)" if closest else ""
        warnings.append(f"environment variable {name} names no tether setting{suggestion}")
    return warnings


def closest_name(name: str, candidates: Sequence[str] | Mapping[str, Any]) -> str | None:
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _env_closest(model: type[BaseModel], parts: Sequence[str]) -> str | None:
    """``None`` if the variable is valid, else the closest valid variable name ("" when nothing is close)."""
    fields = model.model_fields
    head = parts[0]
    field = fields.get(head)
    if field is None:
        close = closest_name(head, fields)
        return "" if close is None else ENV_PREFIX + close.upper()
    nested = _model_of(field.annotation)
    if len(parts) == 1 or nested is None:
        return None
    below = _env_closest(nested, parts[1:])
    if below is None:
        return None
    return below and f"{ENV_PREFIX}{head.upper()}__{below.removeprefix(ENV_PREFIX)}"


def _unknown_in_value(annotation: Any, value: Any, path: KeyPath) -> Iterator[UnknownKey]:
    nested = _model_of(annotation)
    if nested is not None and isinstance(value, Mapping):
        yield from unknown_keys(nested, value, path)
        return
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        for option in get_args(annotation):
            if _model_of(option) is not None or get_origin(option) in (dict, list):
                yield from _unknown_in_value(option, value, path)
                return
        return
    args = get_args(annotation)
    if origin is dict and len(args) == 2 and isinstance(value, Mapping):
        for key, entry in value.items():
            yield from _unknown_in_value(args[1], entry, (*path, key))
    elif origin is list and args and isinstance(value, list):
        for index, entry in enumerate(value):
            yield from _unknown_in_value(args[0], entry, (*path, index))


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _unknown_key_message(config_file: Path, text: str, unknown: UnknownKey) -> str:
    line = find_line(text, unknown.path)
    where = f"{config_file}:{line}" if line else str(config_file)
    hint = f"; did you mean '{unknown.closest}'?" if unknown.closest else ""
    return f"{where}: unknown key '{unknown.name}' in {_table_name(unknown.path[:-1])}{hint}"


def _validation_message(config_file: Path | None, text: str | None, error: ValidationError) -> str:
    first = error.errors()[0]
    path: KeyPath = tuple(first["loc"])
    line = find_line(text, path) if text is not None else None
    if config_file is not None and line is not None:
        where = f"{config_file}:{line}"
    else:
        where = "configuration (environment or defaults)" if config_file is None else f"{config_file} or environment"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {_dotted(path)}: {first['msg'].removeprefix('Value error, ')}{more}"


def _environment_message(error: SettingsError) -> str:
    field = re.search(r'field "([^"]+)"', str(error))
    if field is None:
        return f"configuration (environment): {error}"
    name = ENV_PREFIX + field.group(1).upper()
    example = f"{name}='{{...}}'"
    return f"environment variable {name} is not valid JSON: a table or list setting is given as JSON, e.g. {example}"


def _table_name(path: KeyPath) -> str:
    if not path:
        return "the top level"
    if isinstance(path[-1], int):
        return f"[[{_dotted(path[:-1])}]] #{path[-1] + 1}"
    return f"[{_dotted(path)}]"


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_TABLE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def find_line(text: str, path: KeyPath) -> int | None:
    """The 1-based line of ``text`` (TOML) that defines the key at ``path``, as near as a line scan can tell."""
    table: KeyPath = ()
    array_counts: dict[tuple[str | int, ...], int] = {}
    target = path
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TABLE.match(line)
        if header:
            keys = tuple(_split_dotted(header.group(2)))
            if header.group(1) == "[[":
                index = array_counts.get(keys, -1) + 1
                array_counts[keys] = index
                table = (*keys, index)
            else:
                table = keys
            if table == target:
                return number
            continue
        key = _KEY.match(line)
        if not key:
            continue
        full = (*table, *_split_dotted(key.group(1)))
        if full == target:
            return number
        if target[: len(full)] == full and any(
            isinstance(part, str) and re.search(rf"\b{re.escape(part)}\b", line) for part in target[len(full) :]
        ):
            return number  # an inline table or array on this line holds the key
    return None


def _split_dotted(keys: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(r""""[^"]*"|'[^']*'|[^.]+""", keys)]
