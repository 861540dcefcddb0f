"""Command line: `tokenrace bench|runs|show|export|emulate|demo`."""

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)
