"""Kafka plumbing: broker factory, envelope codec, outbox, inbox and event consumers."""
