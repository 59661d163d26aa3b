"""Generated protocol code for EAP v1 (``protoc`` output; regenerate with ``python proto/generate.py``)."""
