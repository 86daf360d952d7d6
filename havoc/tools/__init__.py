"""havoc.tools: the tools PRIME calls — statistics, DOE/SPC, symbolic maths, retrieval — and their registry.

Pure Python over scipy, statsmodels, sympy, matplotlib, jsonschema and faiss (the `tools` extra; the
sentence-embedding model is the `embeddings` extra). Every tool returns a JSON-serializable dict with its
figures, the method used and a one-line interpretation.

    from havoc.tools import default_registry, extract_tool_calls
    reg = default_registry()
    reg.execute("statistics", {"operation": "t_test", "kind": "welch", "x": [...], "y": [...]})
    reg.run_text(generated_text)          # every <tool>{...}</tool> span, executed in order

Modules: stats (tests, ANOVA, regression), doe (designs, factorial analysis), spc (charts, rules,
capability), symbolic (safe sympy), plots, dsl (the DOE/SPC language), retrieval (embeddings, FAISS,
rag_helper), registry (ToolRegistry, extract_tool_calls), builtin (the shipped tools and schemas).
"""

from havoc.spec import DSLExecutor, PythonMathEngine, RAGHelper
from havoc.tools.builtin import default_registry, register_builtin
from havoc.tools.registry import ToolCall, ToolContext, ToolRegistry, ToolSpec, extract_tool_calls

__all__ = ["DSLExecutor", "PythonMathEngine", "RAGHelper", "ToolCall", "ToolContext", "ToolRegistry", "ToolSpec",
           "default_registry", "extract_tool_calls", "register_builtin"]
