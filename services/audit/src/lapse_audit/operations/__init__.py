"""The audit service's use cases, one per module."""
