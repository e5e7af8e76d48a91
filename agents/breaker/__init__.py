"""Circuit breakers per provider and operation: a pure window and state machine (issue 21)."""
