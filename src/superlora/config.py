"""Typed recipe configs: a YAML file, then ``key=value`` overrides from the command line.

Each command declares its settings as a (possibly nested) dataclass. ``load_config`` merges
the YAML recipe and the overrides (dotted keys reach nested sections: ``lora.r=8``), checks
every value against the field's type, and rejects unknown keys naming the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
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


def _unknown_key(key: str, cls: type, where: str, prefix: str = "") -> SuperloraError:
    valid = [f"{prefix}{path}" for path in _field_paths(cls)]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(valid)})"
    return SuperloraError(f"unknown config key '{key}' in {where}{hint}")


def _as_float(value: Any) -> float | None:
    """A number as float; YAML 1.1 reads "1e-2" (no dot) as a string, so numeric strings count too."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


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
        number = _as_float(value)
        if number is not None:
            if not math.isfinite(number):  # .inf/.nan pass YAML and every "> 0" check, then train a NaN adapter
                raise SuperloraError(f"config key '{key}': must be a finite number, got {value!r}")
            return number
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


def section_union(hint: Any) -> tuple[type, ...] | None:
    """The dataclasses of a ``A | B`` hint whose members are told apart by their ``name`` field (tasks)."""
    if typing.get_origin(hint) not in (Union, types.UnionType):
        return None
    args = typing.get_args(hint)
    if args and all(dataclasses.is_dataclass(a) and "name" in {f.name for f in dataclasses.fields(a)} for a in args):
        return args
    return None


def _section_name(cls: type) -> str:
    return next(f.default for f in dataclasses.fields(cls) if f.name == "name")


def _pick_section(options: tuple[type, ...], value: Any, key: str) -> type:
    """The member of a named-section union that ``value['name']`` names (the first one by default)."""
    names = {_section_name(cls): cls for cls in options}
    name = value.get("name", _section_name(options[0]))
    if name not in names:
        close = difflib.get_close_matches(str(name), list(names), n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SuperloraError(f"config key '{key}.name': unknown {key} {name!r}{hint}; choose from {', '.join(names)}")
    return names[name]


def section(hint: Any, value: Any, where: str, key: str) -> Any:
    """A nested section: a dataclass, or one of a named-section union chosen by its ``name``."""
    if not isinstance(value, dict):
        raise SuperloraError(f"config key '{key}' in {where} must be a mapping")
    options = section_union(hint)
    cls = _pick_section(options, value, key) if options else hint
    return _build(cls, value, where, f"{key}.")


def _optional_section(hint: Any) -> type | None:
    """``Section | None`` -> Section."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (Union, types.UnionType) and len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def _list_of_sections(hint: Any) -> bool:
    args = typing.get_args(hint)
    return typing.get_origin(hint) is list and len(args) == 1 and dataclasses.is_dataclass(args[0])


def _build(cls: type[T], data: dict, where: str, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    migrate = getattr(cls, "migrate", None)
    if migrate is not None:  # keys of an older recipe layout, moved to where they live now
        data = migrate(dict(data))
    kwargs = {}
    for name, value in data.items():
        if name not in names:
            raise _unknown_key(f"{prefix}{name}", cls, where, prefix)
        hint = hints[name]
        key = f"{prefix}{name}"
        optional = _optional_section(hint)
        if dataclasses.is_dataclass(hint) or section_union(hint):
            kwargs[name] = section(hint, value, where, key)
        elif optional is not None:
            kwargs[name] = None if value is None else section(optional, value, where, key)
        elif _list_of_sections(hint):
            item = typing.get_args(hint)[0]
            items = value if isinstance(value, list) else [value]
            kwargs[name] = [section(item, v, where, f"{key}[{i}]") for i, v in enumerate(items)]
        else:
            kwargs[name] = _check(value, hint, key)
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
    except UnicodeDecodeError as exc:
        raise SuperloraError(f"{path}: not UTF-8 text (byte {exc.start}); save the recipe as UTF-8") from None
    except OSError as exc:
        raise SuperloraError(f"cannot read {path}: {exc.strerror or exc}") from None
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


def read_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A recipe with its ``base:`` recipes merged under it (a path relative to the recipe's folder).

    ``base: e2e-lora.yaml`` lets a control recipe say only how it differs; sections merge key by key.
    """
    path = Path(path)
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise SuperloraError(f"{path}: base: must be the path of another recipe, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise SuperloraError(f"{path}: base: {base} includes itself (a cycle of base recipes)")
    if not base_path.is_file():
        raise SuperloraError(f"{path}: base recipe not found: {base} (looked for {base_path})")
    return _merge(read_recipe(base_path, (*_seen, path.resolve())), data)


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None, defaults: dict | None = None
) -> T:
    """Build ``cls`` from ``defaults``, an optional YAML recipe (with its ``base:``) and ``key=value`` overrides,
    each merged over the one before, validated."""
    data = _merge(defaults or {}, read_recipe(path) if path else {})
    data = _merge(data, parse_overrides(overrides or []))
    return _build(cls, data, str(path) if path else "overrides")


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
