"""Federation: node-to-node transport, trust list, batch sync (and the transfer engine's home).

Server-to-server code, apart from the local client API (:mod:`eap.node.api`):

* :mod:`.settings`   — the ``[federation]`` settings of a node home.
* :mod:`.descriptor` — signed node descriptors (who a node is, its keys, endpoint, CA).
* :mod:`.peers`      — the trust list (``peers`` table) and the key update rule.
* :mod:`.auth`       — the one authenticator of every inbound call, per-peer rate limits.
* :mod:`.server`     — the ``eap.v1.Federation`` servicer and its mutual-TLS gRPC server.
* :mod:`.client`     — :class:`~.client.PeerClient`: signed calls to peers with retries.
* :mod:`.sync`       — pull peers' signed record batches by cursor, verify, validate, import.
* :mod:`.runtime`    — what ``eap-node serve`` runs: federation server + background worker.
* :mod:`.transfers`  — the exactly-once cross-node transfer engine (with ``crashpoints``,
  ``inprocess`` and ``conservation`` for its tests), installed as a runtime extension.
* :mod:`.testing`    — a fake peer and batch crafting for Complement-style tests.
* :mod:`.cli`        — ``eap-node certs|descriptor|peer|sync`` commands.

The protocol and operator guide are in ``docs/federation.md``.
"""
