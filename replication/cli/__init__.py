"""The ``replikit`` command line, one module per command group; the root is ``app``."""

from replication.cli.app import main

__all__ = ["main"]
