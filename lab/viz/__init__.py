"""Plots, animations and the token visualizer: matplotlib over numbers the caller computed (from the files
`run` wrote); nothing here trains, restores a model or computes statistics."""
