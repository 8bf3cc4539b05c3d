"""Tiny helpers every floor may use (file hashing, URL redaction, backoff, the UTC clock,
private key files): standard library only, importing nothing else of floor_agent."""
