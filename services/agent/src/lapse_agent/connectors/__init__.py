"""Connectors: the target-specific code that grants, revokes, verifies and discovers."""
