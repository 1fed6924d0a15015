"""Ratings of job outputs: 1–5 stars, one per member per output (models: generation.models.OutputRating)."""
