"""Lapse audit service: stores every event on every Lapse topic once, in an append-only,
hash-chained log, and answers queries and chain verifications over gRPC."""
