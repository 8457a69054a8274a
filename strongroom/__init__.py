"""Strongroom: verified backups and syncs for people who run their own machines."""

__version__ = "0.1.0"
