"""telemetry phase of tiergate (see README architecture)."""
