"""A user's own package of tasks, outside src/: what a researcher brings to e2elab."""
