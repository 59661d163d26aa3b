"""Run the EAP interop conformance suite against a node: ``python interop-tests/run.py --help``.

    python interop-tests/run.py --server_host H --server_port P --token_file HOME/api-token \
        --federation_port P2 --identity KIT [--cases a,b] [--skip a,b] [--skip_file F]
    python interop-tests/run.py identity --out KIT --ca_cert ca/ca.crt --ca_key ca/ca.key

Prints PASS/FAIL/SKIP per case; exits 1 when a case failed.  The cases are specified in
``interop-tests/SPEC.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eap_interop.runner import main

if __name__ == "__main__":
    sys.exit(main())
