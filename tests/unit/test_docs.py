"""The docs keep up with the code: every config key, every column, every example key is real."""

from __future__ import annotations

import re
import tomllib
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from maild.db.tables import Base
from maild.settings import Config, load_config

ROOT = Path(__file__).parents[2]
CONFIG_DOC = ROOT / "docs" / "config.md"
SCHEMA_DOC = ROOT / "docs" / "schema.md"
EXAMPLE = ROOT / "config" / "maild.example.toml"

HEADING = re.compile(r"^#{1,6} ")
TABLE_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.]+)\s*\]\]?\s*(?:#.*)?$")
KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*)\s*=")
COMMENTED_KEY_LINE = re.compile(r"^(\s*)#\s*([A-Za-z_][A-Za-z0-9_]*\s*=.*)$")
# Keys that exclude each other: uncommenting one means the other must go.
EXCLUSIVE = {"password_env": "password_file", "password_file": "password_env"}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Find the config models inside a field's type, through Optional, list and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = get_origin(annotation)
    if origin is Annotated:
        return _models_in(get_args(annotation)[0])
    if origin in (list, tuple, set, frozenset, Union, types.UnionType):
        return [model for arg in get_args(annotation) for model in _models_in(arg)]
    return []


def _walk(model: type[BaseModel], path: str = "") -> list[tuple[str, type[BaseModel]]]:
    """List every config model with its TOML table path: Config at "", then database, accounts.imap, ..."""
    found = [(path, model)]
    for name, info in model.model_fields.items():
        for sub in _models_in(info.annotation):
            found.extend(_walk(sub, f"{path}.{name}" if path else name))
    return found


MODELS = _walk(Config)
MODEL_AT = dict(MODELS)


def _section(doc: str, table: str) -> str:
    """Give the part of config.md under the heading that names `[table]`, up to the next heading."""
    lines = doc.splitlines()
    for start, line in enumerate(lines):
        if HEADING.match(line) and f"[{table}]" in line:
            end = next(
                (i for i in range(start + 1, len(lines)) if HEADING.match(lines[i])), len(lines)
            )
            return "\n".join(lines[start:end])
    raise AssertionError(f"docs/config.md has no heading naming [{table}]")


def test_models_are_all_found() -> None:
    """The model walk reaches every nested config model, list items included."""
    assert set(MODEL_AT) >= {
        "",
        "database",
        "daemon",
        "smtp",
        "accounts",
        "accounts.imap",
        "accounts.folders",
    }


@pytest.mark.parametrize(("table", "model"), MODELS, ids=[path or "(top)" for path, _ in MODELS])
def test_every_config_key_is_documented(table: str, model: type[BaseModel]) -> None:
    """Every field of every config model appears backticked in docs/config.md, in its table's section."""
    doc = CONFIG_DOC.read_text(encoding="utf-8")
    where = _section(doc, table) if table else doc
    missing = [name for name in model.model_fields if f"`{name}`" not in where]
    assert not missing, f"[{table or 'top level'}] keys missing from docs/config.md: {missing}"


@pytest.mark.parametrize("table", sorted(Base.metadata.tables))
def test_every_column_is_documented(table: str) -> None:
    """Every column of every table maild owns appears backticked in docs/schema.md."""
    doc = SCHEMA_DOC.read_text(encoding="utf-8")
    assert f"`{table}`" in doc, f"table {table} missing from docs/schema.md"
    columns = Base.metadata.tables[table].columns
    missing = [column.name for column in columns if f"`{column.name}`" not in doc]
    assert not missing, f"{table} columns missing from docs/schema.md: {missing}"


def test_letter_statuses_are_documented() -> None:
    """Every letter status the code writes is explained in docs/schema.md."""
    from maild.db.tables import LETTER_STATUSES

    doc = SCHEMA_DOC.read_text(encoding="utf-8")
    assert all(f"`{status}`" in doc for status in LETTER_STATUSES)


def _example_keys(lines: list[str]) -> list[tuple[int, str, str, bool]]:
    """List (line index, table path, key, commented) for every key line of the example, commented or not."""
    keys = []
    table = ""
    for index, line in enumerate(lines):
        if header := TABLE_HEADER.match(line):
            table = header.group(1)
        elif active := KEY_LINE.match(line):
            keys.append((index, table, active.group(2), False))
        elif (commented := COMMENTED_KEY_LINE.match(line)) and (
            inner := KEY_LINE.match(commented.group(2))
        ):
            keys.append((index, table, inner.group(2), True))
    return keys


EXAMPLE_LINES = EXAMPLE.read_text(encoding="utf-8").splitlines()
EXAMPLE_KEYS = _example_keys(EXAMPLE_LINES)
COMMENTED = [(i, table, key) for i, table, key, commented in EXAMPLE_KEYS if commented]


def test_example_validates() -> None:
    """The example config as shipped passes every check except reading secrets."""
    config = load_config(EXAMPLE, check_secrets=False)
    assert config.accounts


def test_example_scan_sees_commented_keys() -> None:
    """The example scanner finds the commented-out keys, so the key checks are not vacuous."""
    assert {key for _, _, key in COMMENTED} >= {"password_file", "ca_file", "url"}


@pytest.mark.parametrize(
    ("index", "table", "key", "commented"),
    EXAMPLE_KEYS,
    ids=[f"{table or '(top)'}.{key}@{i + 1}" for i, table, key, _ in EXAMPLE_KEYS],
)
def test_example_key_is_a_real_field(index: int, table: str, key: str, commented: bool) -> None:
    """Every key in the example, commented out or not, is a field of the model of its table."""
    assert table in MODEL_AT, f"line {index + 1}: [{table}] is not a config table"
    assert key in MODEL_AT[table].model_fields, f"line {index + 1}: {key} is not a key of [{table}]"


def _block(lines: list[str], index: int) -> range:
    """Give the line range of the TOML table that line ``index`` belongs to."""
    start = next((i for i in range(index, -1, -1) if TABLE_HEADER.match(lines[i])), -1) + 1
    end = next(
        (i for i in range(index + 1, len(lines)) if TABLE_HEADER.match(lines[i])), len(lines)
    )
    return range(start, end)


@pytest.mark.parametrize(
    ("index", "table", "key"),
    COMMENTED,
    ids=[f"{table or '(top)'}.{key}@{i + 1}" for i, table, key in COMMENTED],
)
def test_commented_example_key_validates(index: int, table: str, key: str) -> None:
    """Uncommenting an example key, in place of the active one it replaces, gives a valid config."""
    lines = list(EXAMPLE_LINES)
    match = COMMENTED_KEY_LINE.match(lines[index])
    assert match is not None
    replaced = {key, EXCLUSIVE.get(key)}
    for i in _block(lines, index):
        active = KEY_LINE.match(lines[i])
        if active and active.group(2) in replaced:
            lines[i] = ""
    lines[index] = match.group(1) + match.group(2)
    data = tomllib.loads("\n".join(lines))
    Config.model_validate(data)
