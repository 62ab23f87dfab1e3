"""maild: the mail engine of a CRM."""

__version__ = "0.1.0"
