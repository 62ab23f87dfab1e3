"""The parser process hashes each letter, so the event loop need not: the hash must be the raw's."""

from __future__ import annotations

import hashlib
import pickle

from maild.ingest.parse import HashedLetter, parse_letter, parse_many


def test_parse_many_hashes_the_exact_bytes_it_parsed() -> None:
    """Each parsed letter carries the SHA-256 of its raw bytes and survives the trip back."""
    raws = [b"From: a@example.com\r\nSubject: one\r\n\r\nbody\r\n", b"Subject: two\r\n\r\nx\r\n"]
    results = pickle.loads(pickle.dumps(parse_many(raws)))
    for raw, result in zip(raws, results, strict=True):
        assert isinstance(result, HashedLetter)
        assert result.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert results[0].subject == "one"


def test_hashed_letter_equals_the_plain_parse_but_for_the_hash() -> None:
    """The worker's letter holds exactly what parse_letter reads, plus the hash."""
    raw = b"From: Ann <ann@example.com>\r\nTo: b@example.com\r\nSubject: s\r\n\r\nhello\r\n"
    hashed = parse_many([raw])[0]
    plain = parse_letter(raw)
    assert isinstance(hashed, HashedLetter)
    assert (hashed.subject, hashed.from_, hashed.to, hashed.text) == (
        plain.subject,
        plain.from_,
        plain.to,
        plain.text,
    )
