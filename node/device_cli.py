"""``eap-node device import``: register a city's devices from one file, all or nothing.

The file is CSV (a header naming the columns) or JSON Lines (one object per line with the
same keys), detected by extension (``.jsonl``/``.ndjson``) or ``--format``.  A refused file
prints one line per rejected row (row number, column, reason; literally) or, with
``--json``, ``{"ok": false, "rejected": [{"row", "field", "reason"}]}``, exits non-zero and
stores nothing.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from eap.node.cli import _emit, _home_option, _json_option, _open, _request_option, _rid
from eap.node.cli_output import error
from eap.node.errors import InvalidArgument

_ROW = re.compile(r"^devices\[(\d+)\](?:\.(.*))?$")


def rejected_rows(exc: InvalidArgument) -> list[dict]:
    """The refusal as rows: ``{"row": 1-based data row or None, "field", "reason"}``."""
    out = []
    for v in exc.violations:
        m = _ROW.match(v.field)
        if m:
            out.append(
                {"row": int(m.group(1)) + 1, "field": m.group(2) or "", "reason": v.description}
            )
        else:
            out.append({"row": None, "field": v.field, "reason": v.description})
    return out


def register(main: click.Group) -> None:
    device = main.commands["device"]

    @device.command("import")
    @click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
    @click.option(
        "--format",
        "fmt",
        default="",
        type=click.Choice(["", "csv", "jsonl"]),
        help="csv or jsonl (default: by extension; .jsonl/.ndjson are JSON Lines).",
    )
    @_request_option
    @_home_option
    @_json_option
    def device_import(file, fmt, request_id, home, as_json) -> None:
        """Register every device of FILE (CSV or JSON Lines), all or nothing.

        \b
        Columns (CSV header / JSON keys), as the `device register` options:
          ref, capacity_w, source, technology, commissioned, lat, lon, zone, owner,
          meter_id, attestation
        Optional: renewable_ppm, carbon, attestation_scheme (default operator-signed).

        Every row is checked like `device register` (including attestation and validation
        plugins); any rejected row stores nothing, prints a report (row, column, reason)
        and exits non-zero.
        """
        try:
            res = _open(home).import_devices(file, request_id=_rid(request_id), fmt=fmt)
        except InvalidArgument as exc:
            rows = rejected_rows(exc)
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "ok": False,
                            "message": str(exc.message if hasattr(exc, "message") else exc),
                            "rejected": rows,
                        },
                        sort_keys=True,
                    )
                )
            else:
                error(f"{file}: nothing was registered; {len(rows)} problem(s):")
                out = sys.stderr
                for r in rows:
                    where = f"row {r['row']}" if r["row"] is not None else "file"
                    out.write(f"  {where}: {r['field'] or '-'}: {r['reason']}\n")
            sys.exit(exc.exit_code)
        _emit(
            res.to_dict(),
            as_json,
            text=f"registered {res.devices:,} devices ({res.first_id} .. {res.last_id})",
        )
