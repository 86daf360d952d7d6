"""The exceptions havoc raises for bad input. Each message names what is wrong and, where it can, the fix.

They derive from the builtin a caller would expect (ValueError, FileNotFoundError) as well as from
`HavocError`, so `except ValueError` keeps working and `except HavocError` catches all of ours.
"""


class HavocError(Exception):
    """Base class of every error havoc raises on purpose."""


class ConfigError(HavocError, ValueError):
    """A model or run configuration is invalid."""


class CheckpointError(HavocError, ValueError):
    """A checkpoint (safetensors, GGUF, config JSON) is missing, corrupt or does not fit the model."""


class ModelNotFoundError(HavocError, FileNotFoundError):
    """A model name or path does not resolve to a checkpoint."""


class PullError(HavocError, RuntimeError):
    """Fetching a model package from the registry failed."""


class TokenizerError(HavocError, ValueError):
    """A tokenizer could not be built or was given input it cannot handle."""


class GenerationError(HavocError, ValueError):
    """Invalid generation arguments or a prompt the model cannot take (empty, longer than the context)."""


class OutOfBlocksError(HavocError, MemoryError):
    """The paged KV cache has too few free or evictable blocks for the call; the block manager is unchanged."""


class UnknownSequenceError(HavocError, KeyError):
    """A sequence id the block manager does not hold."""


class ToolError(HavocError, ValueError):
    """A tool (statistics, DOE, SPC, symbolic, retrieval) was given arguments it cannot work with."""


class DSLError(ToolError):
    """A DOE/SPC DSL script does not parse; the message starts with `line L, column C:`."""

    def __init__(self, message: str, line: int, column: int):
        super().__init__(f"line {line}, column {column}: {message}")
        self.line = line
        self.column = column


class PrimeError(HavocError, ValueError):
    """PRIME (routing, reasoning, evaluation) was given input it cannot work with."""


class InsufficientMemoryError(HavocError, MemoryError):
    """An allocation (a KV pool, a cache) would not fit the memory the device has available; nothing was
    allocated. The message gives both figures."""


class TrainingDivergedError(HavocError, FloatingPointError):
    """Training produced a non-finite loss or non-finite weights; nothing non-finite was saved."""
