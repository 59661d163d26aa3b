"""Bearer tokens: random, URL-safe, and safe to pass as the value of a command-line option."""

from __future__ import annotations

import secrets


def bearer_token() -> str:
    """32 random bytes as URL-safe base64 (43 characters) that never start with ``-``.

    One ``token_urlsafe`` in 64 does, and a command line's parser (argparse, as in
    ``interop-tests/run.py --token T``) then reads the token as an option of its own.  A
    token that starts with ``-`` is drawn again: what is left is uniform over the others,
    with 0.02 bits less entropy."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token
