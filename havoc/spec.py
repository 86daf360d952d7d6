"""The HAVOC-7B + PRIME specification's interfaces, as it writes them (havoc's package names stand in for its
`havoc_core...` import paths). havoc's own names remain the documented ones; these are thin faces over them.

    from havoc import Havoc7BConfig, HavocPrimeModel
    from havoc.spec import DSLExecutor, PythonMathEngine, RAGHelper

    model = HavocPrimeModel.from_pretrained("checkpoints/phase3/final")   # or "smollm2", a .gguf
    result = model.generate_with_prime(prompt="Compare two groups using t-test: [1,2,3,4,5] vs [2,3,4,5,6]",
                                       enable_prime=True, tools={"python_math": PythonMathEngine()},
                                       max_new_tokens=512)
    print(result["text"]); print(result["workspace"].summarize()); print(result["verification"])

- `HavocPrimeModel`: an `LLM` (model, tokenizer, engine) with PRIME's `generate_with_prime`; the result
  reads as the spec's dict (`havoc.prime.PrimeResult` is a mapping).
- `PythonMathEngine`, `DSLExecutor`, `RAGHelper`: the spec's tool objects, over havoc's registry
  (`python_math` is havoc's `statistics` and `symbolic` under the spec's argument names,
  havoc/tools/aliases.py); `execute(**args)` returns the tool's result.
- `Havoc7BConfig` (havoc/config.py): the `havoc-7b` preset read through the spec's nested names.
- `python -m havoc "PROMPT"`: the spec's `python -m havoc_cli.main "PROMPT"`, i.e. `havoc ask`.

Where the spec is wrong (its parameter count, its t-test figures, its memory table, its clashing token ids),
havoc is right and docs/spec.md says so once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from havoc.config import Havoc7BConfig
from havoc.errors import ToolError


class _SpecTool:
    """A spec tool object: `execute(**args)` runs the call through havoc's registry."""

    name = ""
    havoc_tools: tuple[str, ...] = ()

    def execute(self, **args: Any) -> dict:
        """Run the tool; returns its result (a dict). Raises ToolError with the registry's message."""
        from havoc.tools import default_registry

        out = default_registry().execute(self.name, args)
        if not out["success"]:
            raise ToolError(out["error"])
        return out["result"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PythonMathEngine(_SpecTool):
    """The spec's `python_math`: t-tests, ANOVA, regression and the rest of havoc's statistics, and symbolic
    maths (derivative, integral, simplify, solve, evaluate), with the spec's argument names (group1/group2)."""

    name = "python_math"
    havoc_tools = ("statistics", "symbolic")


class DSLExecutor(_SpecTool):
    """The spec's `dsl_executor`: DOE designs and analysis, SPC charts and capability."""

    name = "dsl_executor"
    havoc_tools = ("dsl_executor",)


class RAGHelper(_SpecTool):
    """The spec's `rag_helper`: retrieval over the statistics/DOE/SPC corpus."""

    name = "rag_helper"
    havoc_tools = ("rag_helper",)


class HavocPrimeModel:
    """The spec's model with PRIME inside its generation: an `LLM` and `generate_with_prime`.

    Args:
        llm: a `havoc.LLM` (see `from_pretrained`).
    """

    def __init__(self, llm) -> None:
        self.llm = llm
        self.base_model = llm.model
        self.tokenizer = llm.tokenizer
        self.config = llm.model.config

    @classmethod
    def from_pretrained(cls, path: str | Path = "smollm2", **kwargs: Any) -> HavocPrimeModel:
        """Load a checkpoint folder (`save_pretrained`'s, or a training run's `final`), a .gguf file or a known
        model name; keyword arguments as `LLM.load` (dtype, device, engine settings)."""
        from havoc.llm import LLM

        return cls(LLM.load(path, **kwargs))

    def generate_with_prime(
        self,
        prompt: str | None = None,
        tools: Any = None,
        max_new_tokens: int = 512,
        temperature: float = 0.7,
        enable_prime: bool = True,
        *,
        prompt_ids: Any = None,
        **kwargs: Any,
    ):
        """Answer with PRIME (or directly, `enable_prime=False`); returns a `PrimeResult`, readable as the
        spec's dict: result["text"], result["workspace"], result["verification"], result["generated_ids"].

        Args:
            prompt: the request as text (or `prompt_ids`: token ids, a list or a (1, T) tensor, as the spec's
                signature has them).
            tools: None (all of havoc's tools), a mapping of names to tools ({"python_math":
                PythonMathEngine()}), a list of names or a `ToolRegistry`.
            max_new_tokens, temperature: the token budget over all steps, and sampling (0 = greedy); the
                spec's defaults.
            enable_prime: False generates directly with the model.
            **kwargs: as `havoc.prime.generate_with_prime` (budget, seed, on_text, ...).
        """
        from havoc.errors import PrimeError
        from havoc.prime import generate_with_prime

        if prompt is None:
            if prompt_ids is None:
                raise PrimeError("give prompt (text) or prompt_ids")
            ids = prompt_ids.tolist() if hasattr(prompt_ids, "tolist") else list(prompt_ids)
            if ids and isinstance(ids[0], list):
                if len(ids) != 1:
                    raise PrimeError(f"prompt_ids holds {len(ids)} prompts; give one")
                ids = ids[0]
            prompt = self.tokenizer.decode(ids, skip_special_tokens=True)
        return generate_with_prime(prompt, tools=tools, enable_prime=enable_prime, max_new_tokens=max_new_tokens,
                                   temperature=temperature, llm=self.llm, **kwargs)


__all__ = ["DSLExecutor", "Havoc7BConfig", "HavocPrimeModel", "PythonMathEngine", "RAGHelper"]
