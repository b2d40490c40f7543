"""A stand-in for Tailscale's closed-source tsrecorder, for the lab (Python stdlib plus `h2`).

It is shipped to lab hosts as one executable zip (see ../bundle.py) and behaves as
../../../../../shared/reference/tailscale.md section 2 documents.
"""

VERSION = "1.0.0-sim"
