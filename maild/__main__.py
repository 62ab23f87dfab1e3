"""Allow `python -m maild`, the same as the `maild` command."""

from maild.command import main

main()
