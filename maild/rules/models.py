"""The TOML shape of one ``[[rules]]`` table, checked by pydantic before the rules are compiled.

pydantic checks the rule's own keys (unknown keys, types). The condition tree under ``match``
and the action tables under ``actions`` are kept as tables here and compiled by
``maild.rules.loader`` through the registries, which knows every condition and action name,
reports every problem of every rule at once and names the rule and the exact path
(``rules[3] ("invoices").match.all[0].matches: bad regex: ...``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


Name = Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=200)]


class RuleConfig(BaseModel):
    """One sorting rule: which letters it looks at, the condition, and the actions on a match."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: Name
    accounts: list[Name] | None = Field(default=None, min_length=1)
    folders: list[Name] | None = Field(default=None, min_length=1)
    match: dict[str, Any] | None = None
    actions: list[dict[str, Any]] = Field(default_factory=list)
    stop: bool = False
