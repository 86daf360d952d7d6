"""havoc: a performance-first Llama-style decoder.

    import havoc
    llm = havoc.LLM.load("smollm2")                # pulls the checkpoint on first use
    print(llm.generate("The capital of France is", max_new_tokens=16).text)
"""

__version__ = "0.1.0"

try:
    from havoc.kernels import reference as _reference  # noqa: F401  (installed from kernels/)
except ModuleNotFoundError as e:  # pragma: no cover - depends on how havoc was put on sys.path
    import os as _os

    raise ImportError(
        f"havoc was imported from {_os.path.dirname(__file__)}, which has no havoc.kernels: the source tree "
        "is not importable as is. Install the package (`pip install .`, which builds the extension and "
        "maps kernels/ to havoc.kernels) and run from outside the source folder, or run `pytest`."
    ) from e

from havoc.config import PRESETS, Havoc7BConfig, ModelConfig
from havoc.errors import (
    CheckpointError,
    ConfigError,
    GenerationError,
    HavocError,
    ModelNotFoundError,
    PrimeError,
    PullError,
    TokenizerError,
)
from havoc.generation import SamplingParams
from havoc.llm import LLM, Completion
from havoc.model import HavocModel
from havoc.spec import HavocPrimeModel
from havoc.tokenizer import Tokenizer

__all__ = [
    "PRESETS",
    "LLM",
    "CheckpointError",
    "Completion",
    "ConfigError",
    "GenerationError",
    "Havoc7BConfig",
    "HavocError",
    "HavocModel",
    "HavocPrimeModel",
    "ModelConfig",
    "ModelNotFoundError",
    "PrimeError",
    "PullError",
    "SamplingParams",
    "Tokenizer",
    "TokenizerError",
    "__version__",
]
