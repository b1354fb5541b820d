"""Inference: autoregressive generation without a KV cache (the baseline) and with one (project 6)."""

from lab.infer.cached import generate_cached
from lab.infer.generate import generate

__all__ = ["generate", "generate_cached"]
