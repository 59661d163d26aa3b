"""The EAP node: configuration, CLI, gRPC servers, domain logic, storage and crypto.

Sub-packages keep the rooms of DESIGN §4 apart: ``domain`` (rules and the record lifecycle,
no transport), ``store`` (SQLAlchemy repositories), ``api`` (the local gRPC API),
``federation`` (node-to-node), ``crypto`` (keys, signatures, certificates) and ``kernels``
(the one facade over ``eap._core``).
"""

__version__ = "0.1.0"
