"""The conformance kit: rules, sanitizers, strategies, state machine."""
