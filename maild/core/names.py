"""Comparing people's and companies' names as people write them: case, quotes and spacing aside."""

from __future__ import annotations

import re
import unicodedata

_QUOTES = "\"'«»„“”‘’`"
_SPACES = re.compile(r"\s+")
# Legal forms that do not tell two companies apart: «ООО "Ромашка"» is the same firm as «Ромашка».
_LEGAL_FORMS = re.compile(
    r"^(?:ооо|оао|зао|пао|ао|ип|нко|llc|ltd|inc|gmbh|ag|sa|plc|corp)\.?\s+"
    r"|\s+(?:ооо|оао|зао|пао|ао|llc|ltd|inc|gmbh|ag|sa|plc|corp|co)\.?$"
)


def name_key(name: str) -> str:
    """Normalise a display name for comparison: NFKC, case-folded, quotes dropped, spaces collapsed."""
    text = unicodedata.normalize("NFKC", name).casefold()
    text = text.translate({ord(ch): " " for ch in _QUOTES})
    return _SPACES.sub(" ", text).strip(" ,.")


def company_key(name: str) -> str:
    """Normalise a company name for matching: as name_key, without a leading or trailing legal form."""
    key = name_key(name).replace(",", " ")
    key = _SPACES.sub(" ", key).strip()
    previous = None
    while previous != key:
        previous = key
        key = _LEGAL_FORMS.sub("", key).strip(" .")
    return key


def address_key(address: str) -> str:
    """Normalise an email address for matching: stripped, no angle brackets, lower-case."""
    return address.strip().strip("<>").strip().lower()
