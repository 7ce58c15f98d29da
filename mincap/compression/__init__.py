"""Compression for an honest size: quantization-aware training and the shrink steps (`qat`),
structured pruning (`prune`), and compression paths, one training run then a size/accuracy
curve (`path`)."""
