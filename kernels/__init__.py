"""havoc's kernels, installed as `havoc.kernels`: `reference` (plain PyTorch) and the Triton fast paths."""
