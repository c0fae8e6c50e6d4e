"""server phase of tiergate (see README architecture)."""
