"""providers phase of tiergate (see README architecture)."""
