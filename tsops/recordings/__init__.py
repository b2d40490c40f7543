"""Reading tsrecorder's recordings where they land: list, read, search, export, seal, verify."""
