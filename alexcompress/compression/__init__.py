"""The stages: pruning, quantization, importance, sensitivity curves and allocation, and their specs."""
