"""User-facing errors. The CLI prints any `LabError` as one line and exits with status 2."""


class LabError(Exception):
    """A problem with what the user asked for (bad option, bad file, bad data), not a bug in the lab."""


class ConfigError(LabError, ValueError):
    """An unknown key, a value of the wrong type, or a value out of range."""


class DataError(LabError):
    """A missing, unreadable, corrupted, empty or too-short corpus."""


class CheckpointError(LabError):
    """A checkpoint directory that belongs to a different config, or that cannot be restored."""
