"""The command line, `edge-gateway`: one module per command group.

This room owns argument parsing (main.py), the exit codes (exits.py), `ask` (ask.py, a terminal
on the bus), the knowledge-base commands (kb.py) and the broker's credentials (broker.py). It is
the top of the house: it may import every other room, and nothing imports it.
"""

from gateway.cli.main import main

__all__ = ["main"]
