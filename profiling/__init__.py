"""profiling — see README."""
