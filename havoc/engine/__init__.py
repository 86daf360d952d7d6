"""The engine every caller drives: continuous batching over one paged KV pool (`Engine`), in its own
thread for many callers (`EngineLoop`), with sampling, penalties and stop matching in one module
(`havoc.engine.sampling`) and grammar constraints (`havoc.engine.constraint`)."""

from havoc.engine.constraint import Constraint, ConstraintError, GrammarConstraint, ToolCallConstraint
from havoc.engine.engine import Engine, EngineStats, Request, RequestOutput, Status
from havoc.engine.loop import AsyncRequestStream, EngineClosedError, EngineLoop, RequestStream
from havoc.engine.sampling import Sampler, SamplingParams, TextStream, TokenLogprob, sample_next

__all__ = [
    "AsyncRequestStream", "Constraint", "ConstraintError", "Engine", "EngineClosedError", "EngineLoop",
    "EngineStats", "GrammarConstraint", "Request", "RequestOutput", "RequestStream", "Sampler", "SamplingParams",
    "Status", "TextStream", "TokenLogprob", "ToolCallConstraint", "sample_next",
]
