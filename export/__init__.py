"""export — see README."""
