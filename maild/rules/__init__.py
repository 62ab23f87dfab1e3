"""Sorting rules: conditions, actions and the pure engine that returns a Decision."""
