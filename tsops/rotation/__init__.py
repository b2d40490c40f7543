"""`tsops rotate-storage`: move the recorders to a new destination, then copy the recordings.

`target` turns the options into the new storage block (pure), `switch` provisions, canaries and
switches the recorders one at a time, `migrate` copies recordings with SHA-256 verification and
a resumable record of what was verified.
"""
