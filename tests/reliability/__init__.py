"""Reliability tests: the daemon under faults (kill -9, restarts) with nothing lost or doubled."""
