"""Servers: what a host is (the facts probe), what it needs (the pure planner), the shell that
does it (scripts), OpenSSH exposure and its guarded change (exposure), and the phase that
gathers, plans and applies over the chosen servers."""
