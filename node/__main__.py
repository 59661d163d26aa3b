"""``python -m eap.node`` runs the ``eap-node`` CLI."""

from eap.node.cli import main

main()
