"""Training data: labels, statistics, normalization, datasets and samplers."""
