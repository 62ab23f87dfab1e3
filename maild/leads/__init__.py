"""Leads: which letters are leads, in which scenarios, and whose they are."""
