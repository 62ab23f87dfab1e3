"""The outbox: letters and IMAP actions to perform, claimed and retried by a dispatcher."""
