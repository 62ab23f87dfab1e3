"""Resolving a sender's address to a party, in one statement, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.db import parties

pytestmark = pytest.mark.usefixtures("db_url")


async def test_a_contact_person_then_a_client_then_a_potential_client(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """An address resolves to its contact person first, then its client, then its potential
    client; with potential clients left out, an address known only as one resolves to nothing."""
    async with sessions.begin() as session:
        for email in ("only@x.example", "bob@x.example", "carl@acme.example"):
            await parties.create_potential_client(
                session, full_name=email.split("@")[0], company="", email=email
            )
        await parties.client_for(session, full_name="Bob", company="", email="bob@x.example")
        await parties.client_for(
            session, full_name="Carl", company="Acme", email="CARL@acme.example"
        )
    async with sessions() as session:
        only = await parties.resolve_party(session, "Only@X.example")
        bob = await parties.resolve_party(session, "bob@x.example")
        carl = await parties.resolve_party(session, "carl@acme.example")
        hidden = await parties.resolve_party(session, "only@x.example", include_potential=False)
        nobody = await parties.resolve_party(session, "nobody@x.example")
    assert only is not None and (only.kind, only.name) == ("potential_client", "only")
    assert only.potential_client_id is not None
    assert bob is not None and (bob.kind, bob.name) == ("client", "Bob")
    assert carl is not None and (carl.kind, carl.name) == ("contact_person", "Carl")
    assert carl.client_id is not None and carl.contact_person_id is not None
    assert hidden is None and nobody is None
