"""One use case per module: filing a request, notifying approvers, deciding from a button."""
