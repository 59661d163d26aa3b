"""The EAP interop conformance suite: black-box cases aimed at any node by address.

The cases are specified in ``interop-tests/SPEC.md``; this package implements them with the
generated ``eap.v1`` code, ``grpc`` and ``cryptography`` only, so that it can judge another
implementation of the protocol as well as ``eap-node``.

Modules: :mod:`.protocol` (what the documents make normative: envelopes, descriptors, batch
headers, Merkle trees, lineage), :mod:`.identity` (the client identity a node must trust for
the federation cases), :mod:`.context` (connections, set-up through the NodeApi),
:mod:`.cases` (the cases), :mod:`.runner` (command line, PASS/FAIL/SKIP).
"""
