"""Patch the tailnet policy file: the ssh rules tsops manages and the tags they need."""
