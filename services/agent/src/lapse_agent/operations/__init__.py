"""The agent's use cases, one per module."""
