"""lab: sixteen LLM-engineering projects in JAX/Flax, each built, plotted, broken on purpose and measured.

Layers (a lower layer never imports a higher one):
  lab.ops        pure jax.numpy math (attention, masks, norms, activations, losses)
  lab.model      frozen configs with presets, thin Linen modules, pure init/apply
  lab.data       corpora, tokenization into ids, batch sampling, generated toy tasks
  lab.train      optimizer, pure train/eval steps, vmapped+sharded sweeps, the loop, checkpoints, metrics
  lab.infer      autoregressive generation
  lab.analysis   seed statistics and findings;  lab.viz  plots
  lab.experiment the experiment contract and registry; lab.report REPORT.md; lab.cli the `lab` command
"""

__version__ = "0.1.0"
