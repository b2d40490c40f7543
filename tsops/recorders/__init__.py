"""Recorders: the hosts that run tsrecorder and the storage they write to.

render (pure: unit, env files, bucket and IAM policies), host (probe, planner and scripts of a
recorder host), bucket (the S3 bucket's gather, plan and apply), phase (deploy, then the health
gate). Reviewing what they recorded is tsops.recordings.
"""
