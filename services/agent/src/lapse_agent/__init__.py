"""Lapse connector agent: runs inside the customer network and applies signed commands."""
