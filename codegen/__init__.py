"""codegen: proven index sums -> loop nests -> printed NumPy and C kernels; build cache; CLI."""
