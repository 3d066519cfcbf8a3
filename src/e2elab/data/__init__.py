"""Real datasets that ship offline."""
