"""Training: network, contract check, divergence guard, backup and resume, input pipelines, augmentation, distribution."""
