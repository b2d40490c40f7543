"""Flows: one module per command that changes or checks something, below the CLI.

A flow takes a RunContext, reports progress through its Events, and returns a report; it never
prints, prompts or exits (see docs/architecture.md).
"""
