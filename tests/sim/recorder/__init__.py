"""The simulated tsrecorder (run inside lab hosts) and the SSH session generator (run in tests)."""
