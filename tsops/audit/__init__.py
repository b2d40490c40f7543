"""The audit trail beside the recordings: configuration audit events, one timeline of policy
changes, enrolments, tag changes, removals and recorded sessions, and log streaming.

Pure code lives here (parsing, filtering, merging, diff attribution, stream comparison);
`tsops.flows.audit` gathers from the API, the policy history and the recordings, and
`tsops.cli.audit` renders. See docs/audit.md.
"""
