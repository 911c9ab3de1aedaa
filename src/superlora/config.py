"""Typed recipe configs: a YAML file, then ``key=value`` overrides from the command line.

Each command declares its settings as a (possibly nested) dataclass. ``load_config`` merges
the YAML recipe and the overrides (dotted keys reach nested sections: ``lora.r=8``), checks
every value against the field's type, and rejects unknown keys naming the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from superlora.errors import SuperloraError

T = TypeVar("T")


def _field_paths(cls: type, prefix: str = "") -> list[str]:
    paths = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            paths += _field_paths(hint, f"{prefix}{f.name}.")
        else:
            paths.append(f"{prefix}{f.name}")
    return paths


def _unknown_key(key: str, cls: type, where: str) -> SuperloraError:
    valid = _field_paths(cls)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(valid)})"
    return SuperloraError(f"unknown config key '{key}' in {where}{hint}")


def _check(value: Any, hint: Any, key: str) -> Any:
    """Return ``value`` converted to ``hint`` or raise a SuperloraError naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(value, arg, key)
            except SuperloraError as exc:
                errors.append(str(exc))
        raise SuperloraError(errors[0] if len(errors) == 1 else f"config key '{key}': {value!r} fits none of {hint}")
    if origin is Literal:
        if value not in args:
            raise SuperloraError(f"config key '{key}': {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_check(v, args[0] if args else Any, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise SuperloraError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-2" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif hint is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    else:
        return value
    raise SuperloraError(f"config key '{key}': expected {hint.__name__}, got {value!r}")


def _build(cls: type[T], data: dict, where: str, root: type, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        if name not in names:
            raise _unknown_key(f"{prefix}{name}", root, where)
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise SuperloraError(f"config key '{prefix}{name}' in {where} must be a mapping")
            kwargs[name] = _build(hint, value, where, root, f"{prefix}{name}.")
        else:
            kwargs[name] = _check(value, hint, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # __post_init__ range checks
        raise SuperloraError(f"{where}: {exc}") from None


def _set_dotted(data: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SuperloraError(f"config key '{key}': '{part}' is not a section")
    node[leaf] = value


def parse_overrides(items: list[str]) -> dict:
    """``["lora.r=8", "layers=[3, 4]"]`` → nested dict; values are parsed as YAML scalars/lists."""
    data: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SuperloraError(f"override '{item}' is not key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(data, key.strip(), value)
    return data


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SuperloraError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SuperloraError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise SuperloraError(f"{path}: a recipe must be a mapping of key: value")
    return data


def split_recipe(items: list[str]) -> tuple[str | None, list[str]]:
    """``[recipe.yaml] key=value ...`` (in any order) -> (recipe path or None, overrides)."""
    paths = [item for item in items if "=" not in item]
    if len(paths) > 1:
        raise SuperloraError(f"give at most one recipe file, got {', '.join(paths)} (overrides are key=value)")
    return (paths[0] if paths else None), [item for item in items if "=" in item]


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build ``cls`` from an optional YAML recipe and ``key=value`` overrides, validated."""
    data = read_yaml(path) if path else {}
    data = _merge(data, parse_overrides(overrides or []))
    return _build(cls, data, str(path) if path else "overrides", root=cls)


def to_dict(config: Any) -> dict:
    """The config as plain YAML-serialisable data (for run folders and reports)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))
