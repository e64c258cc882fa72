"""The `orc` commands that drive a running engine through its REST API (and, for tokens,
its state store). `orc.cli` mounts them."""
