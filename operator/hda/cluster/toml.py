"""A minimal TOML writer for the configs the plane generates (containerd, hosts.toml).

Only what those files need: nested tables of strings, booleans, integers and lists of strings.
Python reads TOML (`tomllib`) but does not write it; the tests parse the output back with
`tomllib`, so a formatting mistake fails there.
"""

from __future__ import annotations

import json
from typing import Any

Scalar = str | bool | int | float


def _key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum()
    return key if bare else json.dumps(key)


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_value(item, where) for item in value) + "]"
    raise TypeError(f"{where}: cannot write {type(value).__name__} as TOML")


def dumps(document: dict[str, Any]) -> str:
    """`document` as TOML: scalars first, then one `[table]` per nested dict."""
    lines: list[str] = []
    _emit(document, [], lines)
    return "\n".join(lines).strip() + "\n"


def _emit(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {key: value for key, value in table.items() if not isinstance(value, dict)}
    tables = {key: value for key, value in table.items() if isinstance(value, dict)}
    if path and (scalars or not tables):
        lines.append("")
        lines.append("[" + ".".join(_key(part) for part in path) + "]")
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value, '.'.join([*path, key]))}")
    for key, value in tables.items():
        _emit(value, [*path, key], lines)
