"""The lab's experiments, one module per project: eNN_name.py defines EXPERIMENT (see lab.experiment)."""
