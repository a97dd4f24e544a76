"""Pallas kernels (Triton backend on GPU, interpret mode on CPU); installed as ``attnlab.kernels``."""
