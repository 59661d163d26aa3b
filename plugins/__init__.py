"""Built-in plugins of the EAP node, each registered exactly like a third-party plugin."""
