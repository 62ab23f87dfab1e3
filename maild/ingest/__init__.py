"""Ingest: fetch letters from IMAP by UID and parse them; knows nothing of rules or the database."""
