"""Plots drawn from files on disk (metrics.jsonl, checkpoints), never from objects still in memory."""
