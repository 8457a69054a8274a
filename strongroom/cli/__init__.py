"""The command line: one module per command group over the engine packages."""

from .app import main

__all__ = ["main"]
