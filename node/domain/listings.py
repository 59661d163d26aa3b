"""Whole listings as streams: keyset pages walked one after another, constant memory.

Each page is one short read (its own transaction, so a slow reader never holds a database
lock or snapshot for the whole walk) answered by an index range scan; the rows of the page
are handed on before the next page is read.  The CLI's ``--json`` listings and the
server-streaming RPCs (``StreamBundles``, ``StreamDevices``, ``StreamClaims``) use these.

Bundles, the listing that grows with the city, also come as JSON Lines text rendered by the
database (:func:`walk_bundle_lines`, :mod:`eap.node.store.listing_repos`): Python then only
checks and writes lines, which is several times faster than building a record and
serialising it per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from eap.node.store import Store, listing_repos
from eap.node.store.listing_repos import bundle_line

#: Rows per page of a stream (the domain's MAX_PAGE).
STREAM_PAGE = 1000
#: Rows per page of a stream of database-rendered lines after the first page (which has
#: STREAM_PAGE, for an early first line): fewer round trips, about 1 MB of text.
LINES_PAGE = 2000

def walk(
    list_page: Callable[..., Any], page_size: int = STREAM_PAGE, start: str = ""
) -> Iterator[Any]:
    """Every item of a paged listing after page token ``start``, in its order;
    ``list_page(page_size=, page_token=)`` is a :class:`~eap.node.domain.node.Node` listing
    with its filters already bound."""
    token = start
    while True:
        page = list_page(page_size=page_size, page_token=token)
        yield from page.items
        if not page.next_token:
            return
        token = page.next_token


def _exact(text: str) -> bool:
    """Whether database-rendered JSON text is taken as it is: ASCII without DEL, where the
    database's JSON quoting is Python's (:mod:`eap.node.store.listing_repos`)."""
    return text.isascii() and "\x7f" not in text


def walk_bundle_lines(
    store: Store,
    *,
    owner: str | None,
    status: int | None,
    device: str | None,
    limit: int = 0,
    first_page: int = STREAM_PAGE,
    page_size: int = LINES_PAGE,
) -> Iterator[str]:
    """Every bundle matching the filters (at most ``limit``, 0 = all) in serial order, as
    JSON Lines text: one string of newline-terminated lines per keyset page, each page one
    short read.  A line the database cannot render exactly is rendered from the record
    (:func:`bundle_line`) in the same read."""
    after, left, size = "", limit or -1, first_page
    while left:
        want = size if left < 0 else min(size, left)
        with store.read() as conn:
            rows = listing_repos.bundle_lines_page(
                conn, owner=owner, status=status, device=device, after=after, limit=want
            )
            text = "\n".join([line for _, line in rows]) + "\n" if rows else ""
            if not _exact(text):  # rare: render the rows the database cannot from records
                redo = listing_repos.bundles_by_id(
                    conn, [i for i, line in rows if not _exact(line)]
                )
                text = "".join(
                    (line if _exact(line) else bundle_line(redo[i])) + "\n"
                    for i, line in rows
                    if i in redo or _exact(line)  # (one gone between the two reads is gone)
                )
        if text:
            yield text
        if len(rows) < want:
            return
        after, left, size = rows[-1][0], left - len(rows), page_size
