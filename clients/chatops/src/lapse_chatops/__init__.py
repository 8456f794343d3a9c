"""Lapse in Slack and Microsoft Teams: a stateless client of the request and approval APIs."""
