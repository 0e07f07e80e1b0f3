"""kernels — see README."""
