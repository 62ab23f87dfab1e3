"""The rules dry run: what the rules would decide on a letter file or on stored letters, acting on nothing.

``trial`` evaluates one letter exactly as the daemon does, ``replay`` does it over letters already
in the database (read-only), and ``report`` renders both for the terminal or as JSON.
"""
