"""Output helpers shared by the CLI commands."""

from __future__ import annotations

import click

__all__ = ["echo_table", "format_table"]


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces, each as wide as its widest cell; no trailing blanks."""
    widths = [max([len(header)] + [len(row[i]) for row in rows]) for i, header in enumerate(headers)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    )


def echo_table(headers: list[str], rows: list[list[str]]) -> None:
    click.echo(format_table(headers, rows))
