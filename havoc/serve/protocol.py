"""The wire format of havoc's OpenAI-compatible API: request and response bodies as OpenAI's API defines them
(the chat and legacy completions endpoints, models, errors), with the extensions vLLM and llama.cpp's
server accept (top_k, repetition_penalty, reasoning_content / reasoning, /tokenize, /detokenize).

One extension is havoc's own: the `prime` object of the model `havoc-prime` (`Prime` below). A stream
sends it three ways, each on a chunk of its own: the route first (`{"routing": ...}`, on the chunk that
carries the role, before any text), each tool call as soon as it is resolved (`{"tool_call": ...}`, between
the text that asked for it and the `<result>` text that follows), and everything at the end (`routing`,
`verification`, `tool_calls`, `stats`, on the chunk with the answer as `content`). A call's picture is
fetched from the `url` it names (GET, this server's own, the same API key as /v1).

Requests are validated here: a field of the wrong type or out of range is refused with a 400 naming it.
Fields OpenAI defines that havoc does not act on (user, metadata, store, service_tier...) are accepted and
ignored, as vLLM does, so that any OpenAI client works unchanged.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

MAX_N = 16
MAX_STOP = 16
MAX_TOP_LOGPROBS = 20


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ----------------------------------------------------------------------------------------------- requests
class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    """Sampling fields shared by both endpoints."""

    model: str = Field(min_length=1, max_length=256)
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=-1, le=100_000)] | None = None  # vLLM: -1 (or 0) is off
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    seed: Annotated[int, Field(ge=-(2**63), lt=2**64)] | None = None
    stop: str | list[str] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    repetition_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # vLLM's extension (benchmarks)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        if any(not s for s in stops):
            raise ValueError("stop strings must be non-empty")
        return stops

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v):
        if v is None:
            return v
        if len(v) > 300:
            raise ValueError("at most 300 logit_bias entries")
        for k in v:
            if not k.lstrip("-").isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {k!r}")
        return v


class FunctionDef(_Body):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = Field(default=None, max_length=4096)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(_Body):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"] = "function"
    function: NamedFunction


class ToolCallFunction(_Body):
    name: str
    arguments: str = ""


class ToolCall(_Body):
    id: str | None = None
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ContentPart(_Body):
    type: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_only(self):
        if self.type != "text" or self.text is None:
            raise ValueError(f"only text content parts are supported, got a part of type {self.type!r}")
        return self


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    # what a reasoning model said before answering: accepted under either name, never fed back
    reasoning_content: str | None = None
    reasoning: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content)


class JsonSchemaFormat(_Body):
    name: str = Field(default="schema", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _needs_schema(self):
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format of type json_schema needs json_schema.schema")
        return self


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[ToolDef] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _checks(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = [t.function.name for t in self.tools or []]
            if self.tool_choice.function.name not in names:
                raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not in tools")
        if self.tool_choice in ("required",) and not self.tools:
            raise ValueError("tool_choice 'required' needs tools")
        return self


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[StrictInt] | list[list[StrictInt]]  # strict: true is not token 1
    max_tokens: Annotated[int, Field(ge=1)] | None = 16  # OpenAI's default for the legacy endpoint
    logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _checks(self):
        if self.suffix:
            raise ValueError("suffix is not supported")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of other than n is not supported")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt is empty")
        return self


class TokenizeRequest(_Body):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True

    @model_validator(mode="after")
    def _one(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt or messages")
        return self


class DetokenizeRequest(_Body):
    model: str | None = None
    tokens: list[StrictInt] = Field(max_length=1_000_000)


# ----------------------------------------------------------------------------------------------- responses
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None


class PrimePlot(BaseModel):
    """A picture a PRIME tool call drew (control chart, factorial effects, regression residuals)."""

    url: str  # this server's own path: GET /v1/prime/plots/{id}
    format: Literal["png", "svg"]
    width_px: int
    height_px: int
    kind: str  # control_chart, main_effects, interaction, residuals


class PrimeAttempt(BaseModel):
    """One call the model wrote (under the tool's schema) and what verification found in it."""

    text: str
    json_valid: bool
    executed: bool
    problems: list[str] = []


class PrimeToolCall(BaseModel):
    """One tool call of a PRIME run, as resolved.

    resolution: "model" (the model's first call was right), "regenerated" (its second, re-sampled call
    was), "recovered_from_prompt" (both were wrong: the arguments were taken from the prompt and flagged),
    "failed" (wrong, and the prompt does not state them: nothing ran).
    """

    index: int
    subgoal: str | None = None
    tool: str
    operation: str | None = None
    label: str | None = None
    args: dict[str, Any] | None = None
    resolution: Literal["model", "regenerated", "recovered_from_prompt", "failed"]
    summary: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    plot: PrimePlot | None = None
    attempts: list[PrimeAttempt] = []


class Prime(BaseModel):
    """PRIME's structure beside the text (model havoc-prime); see the module docstring for when each is sent."""

    routing: dict[str, Any] | None = None  # budget, task_type, score, reasons, tool, operation, forced, direct
    tool_call: PrimeToolCall | None = None
    verification: dict[str, Any] | None = None  # passed, checks [{name, passed, detail}], recovered, mode ...
    tool_calls: list[PrimeToolCall] | None = None
    stats: dict[str, Any] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    prime: Prime | None = None  # PRIME's routing, verification and tool calls (model havoc-prime)


class DeltaToolCallFunction(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaToolCallFunction


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    prime: Prime | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "havoc"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | int | None = None) -> dict:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
