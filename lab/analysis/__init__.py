"""Seed statistics and findings: what the numbers say, with their uncertainty."""
