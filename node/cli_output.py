"""What the CLI prints: one place for consoles, tables, JSON and JSON Lines.

User data (refs, labels, meter ids, error messages quoting input) is always printed
literally: table cells and titles are :class:`rich.text.Text`, free text goes through
``click.echo``, and styled prefixes are assembled from Text parts, so ``[bold]`` or ``[/x]``
in the data is shown as typed and never parsed as rich markup.

Machine output (``--json``) names enum values as the protocol does (``"status": "ACTIVE"``,
``"source": "SOLAR"``).  Listings that grow with the city stream JSON Lines (one object per
line, the first line as soon as the first page is read) through :func:`json_lines`; bundles
come as lines already rendered (by the database) and are written a page at a time by
:func:`write_blocks`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

import click
from rich import table as rich_table
from rich.console import Console
from rich.text import Text

from eap.node.records.enums import FIELD_ENUMS
from eap.node.records.models import Account, Bundle, Device

# Piped output is for logs and scripts: do not squeeze tables into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)

#: Record fields holding a protocol enum, and the enum that names their values.
ENUM_FIELDS = FIELD_ENUMS


def literal(value: Any) -> Any:
    """``value`` as a renderable that rich prints as-is (strings never parsed as markup)."""
    return Text(value) if isinstance(value, str) else value


class Table(rich_table.Table):
    """A rich table whose title and cells are printed literally (headers are ours)."""

    def __init__(self, *headers: Any, title: Any = None, **kwargs: Any) -> None:
        super().__init__(*headers, title=literal(title), **kwargs)

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        super().add_row(*(literal(c) for c in cells), **kwargs)


#: Records whose fields are all scalars (str, int, float, bool, None).
_FLAT = {Account, Bundle, Device}
#: Bytes fields of the flat records (hex in machine output).
_BYTES = {Account: ("holder_public_key",)}
#: Per enum field: number -> protocol name.
_NAMES = {key: {int(m): m.name for m in kind} for key, kind in ENUM_FIELDS.items()}


def machine(data: Any) -> Any:
    """``data`` for ``--json``: enum fields named (``ACTIVE``, ``SOLAR``), recursively.
    An unknown number stays a number rather than a wrong name."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            names = _NAMES.get(key)
            if names is not None and type(value) is int:
                value = names.get(value, value)
            elif isinstance(value, dict | list | tuple):
                value = machine(value)
            out[key] = value
        return out
    if isinstance(data, list | tuple):
        return [machine(v) for v in data]
    return data


def machine_record(item: Any) -> dict:
    """A record as :func:`machine` would give its ``to_dict``: flat records (every field a
    scalar) straight from their fields with only the enum fields renamed (the fast path of
    streamed listings), others through ``to_dict`` (nested records, bytes as hex)."""
    if type(item) not in _FLAT:
        return machine(item.to_dict())
    out = dict(vars(item))
    for key in _BYTES.get(type(item), ()):  # hex, as to_dict gives it
        if out[key] is not None:
            out[key] = out[key].hex()
    for key, names in _NAMES.items():
        value = out.get(key)
        if type(value) is int:
            out[key] = names.get(value, value)
    return out


def emit(data: Any, as_json: bool, table: Any = None, text: str | None = None) -> None:
    """One result: JSON for machines, else the table or the text (literally)."""
    if as_json:
        click.echo(json.dumps(machine(data), indent=2, sort_keys=True))
    elif table is not None:
        console.print(table)
    elif text is not None:
        click.echo(text)


def styled(label: str, style: str, message: Any = "") -> Text:
    """``label`` in ``style`` followed by ``message`` printed literally."""
    return Text.assemble((label, style), " " if message != "" else "", str(message))


def error(message: Any, label: str = "error:") -> None:
    """One error line on stderr; the message (often quoting input) printed literally."""
    err_console.print(styled(label, "red", message), highlight=False, soft_wrap=True)


def warn(label: str, message: Any) -> None:
    console.print(styled(label, "yellow", message), highlight=False, soft_wrap=True)


def json_lines(items: Iterable[Any], to_dict: Callable[[Any], dict] = machine_record) -> int:
    """Write each item as one JSON object per line (``to_dict``, enum values named), flushed
    as it comes; returns the count."""
    out = sys.stdout
    n = 0
    for item in items:
        out.write(json.dumps(to_dict(item), sort_keys=True) + "\n")
        n += 1
        if n == 1 or n % 1000 == 0:
            out.flush()
    out.flush()
    return n


def write_blocks(blocks: Iterable[str]) -> None:
    """Write text that comes in blocks (e.g. a page of JSON Lines each), flushing each as it
    comes: one write per block, not per line."""
    out = sys.stdout
    for block in blocks:
        out.write(block)
        out.flush()
    out.flush()


def stream_table(
    title: str, headers: list[str], rows: Iterable[list[str]], *, chunk: int = 1000
) -> int:
    """A listing too large to hold as one rich table: aligned plain lines, printed in
    chunks as they come (column widths from the first chunk), values printed literally."""
    out = sys.stdout
    out.write(title + "\n")
    widths: list[int] | None = None
    buf: list[list[str]] = []
    n = 0

    def flush() -> None:
        nonlocal widths
        if widths is None:
            widths = [max([len(h)] + [len(r[i]) for r in buf]) for i, h in enumerate(headers)]
            out.write("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
            out.write("\n")
        for r in buf:
            out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            out.write("\n")
        out.flush()
        buf.clear()

    for row in rows:
        buf.append([str(c) for c in row])
        n += 1
        if len(buf) >= chunk:
            flush()
    if buf or widths is None:
        flush()
    return n
