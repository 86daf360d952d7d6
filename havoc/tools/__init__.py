"""havoc.tools: the tools PRIME calls — statistics, DOE/SPC, symbolic maths, retrieval — and their registry.

Pure Python over scipy, statsmodels, sympy, matplotlib and faiss (the `tools` extra). Every tool returns a
JSON-serializable dict with its figures, the method used and a one-line interpretation.
"""
