"""Consumer-side patterns built on the ports: the idempotent consumer (a dedup table written in
the handler's transaction)."""
