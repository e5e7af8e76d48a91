"""Contract tests: the pieces that must agree with each other across packages."""
