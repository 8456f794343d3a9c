"""The Kafka admin step: topics, principals and their ACLs. Only this tooling, run with
the super user's credential, creates topics, credentials or ACLs; no service can."""
