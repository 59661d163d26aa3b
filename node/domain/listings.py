"""Whole listings as streams: keyset pages walked one after another, constant memory.

Each page is one short read (its own transaction, so a slow reader never holds a database
lock or snapshot for the whole walk) answered by an index range scan; the rows of the page
are handed on before the next page is read.  The CLI's ``--json`` listings and the
server-streaming RPCs (``StreamBundles``, ``StreamDevices``, ``StreamClaims``) use these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

#: Rows per page of a stream (the domain's MAX_PAGE).
STREAM_PAGE = 1000


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
