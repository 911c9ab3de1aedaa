"""Typed recipes: YAML + key=value overrides, type checks, typo suggestions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from superlora.config import load_config, parse_overrides, to_dict
from superlora.errors import SuperloraError


@dataclass
class Inner:
    r: int = 4
    alpha: float = 32.0
    targets: list[str] | None = None


@dataclass
class Outer:
    model: str = "m"
    mode: Literal["a", "b"] = "a"
    layers: Literal["all", "first"] | list[int] = "all"
    flag: bool = False
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.inner.r < 1:
            raise ValueError("inner.r must be >= 1")


def test_yaml_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: x\ninner:\n  r: 8\n  alpha: 16\n")
    cfg = load_config(Outer, recipe, ["inner.alpha=1e-2", "flag=true", "layers=[3, 5]", "mode=b"])
    assert cfg.model == "x" and cfg.inner.r == 8 and cfg.inner.alpha == pytest.approx(0.01)
    assert cfg.flag is True and cfg.layers == [3, 5] and cfg.mode == "b"
    assert to_dict(cfg)["inner"] == {"r": 8, "alpha": 0.01, "targets": None}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["inner.rr=3"], "unknown config key 'inner.rr' in overrides (did you mean 'inner.r'?)"),
        (["modl=x"], "did you mean 'model'"),
        (["inner.r=many"], "config key 'inner.r': expected int, got 'many'"),
        (["mode=c"], "is not one of 'a', 'b'"),
        (["flag=maybe"], "expected bool"),
        (["inner.r=0"], "inner.r must be >= 1"),
        (["inner=3"], "must be a mapping"),
        (["noequals"], "is not key=value"),
    ],
)
def test_bad_overrides_are_one_clear_line(overrides, message):
    with pytest.raises(SuperloraError) as err:
        load_config(Outer, None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_yaml_names_file_and_line(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model: x\ninner: [unclosed\n")
    with pytest.raises(SuperloraError, match=r"bad\.yaml line \d+: invalid YAML"):
        load_config(Outer, recipe, [])
    with pytest.raises(SuperloraError, match="config file not found"):
        load_config(Outer, tmp_path / "missing.yaml", [])


def test_parse_overrides_nests_dotted_keys():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}
