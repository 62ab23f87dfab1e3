"""Real servers on loopback for tests and the demo: a throwaway Dovecot and an SMTP sink."""

from maild.testing.dovecot import DovecotServer, find_dovecot
from maild.testing.smtp import ReceivedMail, SmtpSink

__all__ = ["DovecotServer", "ReceivedMail", "SmtpSink", "find_dovecot"]
