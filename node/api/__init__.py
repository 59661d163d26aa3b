"""The local gRPC API (``eap.v1.NodeApi``): thin servicers over the domain layer.

Authentication (bearer tokens), the mapping of :mod:`eap.node.errors` to gRPC status with
``google.rpc`` details, health and reflection live here; no rule lives here.
"""
