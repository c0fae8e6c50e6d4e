"""routing phase of tiergate (see README architecture)."""
