"""Generated protocol code for EAP v1 (protoc output).

Regenerate with ``python proto/generate.py``; ``tests/test_proto_current.py`` checks it is current.
"""
