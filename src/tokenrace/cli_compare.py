"""CLI commands: compare (registered on :data:`tokenrace.cli.app`)."""

from __future__ import annotations

from tokenrace.cli import app  # noqa: F401
