"""The session recorder: rendering, S3 provisioning, host deployment and the health gate."""
