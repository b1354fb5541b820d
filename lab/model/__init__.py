"""The model: `ModelConfig` + presets, thin Linen layers with the variant dispatch dicts, pure init/apply."""

from lab.model.config import PRESETS, ModelConfig
from lab.model.transformer import apply, apply_cached, init, init_cache, param_count

__all__ = ["PRESETS", "ModelConfig", "apply", "apply_cached", "init", "init_cache", "param_count"]
