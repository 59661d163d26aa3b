"""Domain logic of a node: the rules of DESIGN §3 and the record lifecycle, free of transport.

The CLI and the gRPC API both call :class:`eap.node.domain.node.Node`, so they give the same
results and the same errors.
"""
