"""Training: datasets, devices and torchrun, evaluation, and the retraining loop."""
