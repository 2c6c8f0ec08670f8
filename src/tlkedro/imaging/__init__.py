"""Imaging: reading and checking NIfTI, the synthetic cohort, preprocessing transforms."""
