"""pytest: make the suite's package (``eap_interop``) importable from this folder.

The folder name has a hyphen, so it is not a package itself; ``python -m pytest`` runs with
``--import-mode=importlib``, and only this folder is added to ``sys.path`` for the suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
