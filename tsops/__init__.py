"""tsops: record every SSH session on your servers with Tailscale SSH and tsrecorder."""

__version__ = "0.1.0"
