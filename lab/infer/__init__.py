"""Inference: autoregressive generation (projects 5 and 6 add samplers, a KV cache and a dashboard)."""

from lab.infer.generate import generate

__all__ = ["generate"]
