"""The run-coordinator: the one state machine, fed by events, writing every transition."""
