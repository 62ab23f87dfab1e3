"""Printing stored letters: one printable HTML (or PDF) document, one letter per page."""
