"""sim phase of tiergate (see README architecture)."""
