"""The OpenAI-compatible server (`havoc serve`): `build_app(Server(llm, ServerConfig(...)))` is an ASGI app."""

from havoc.serve.app import PRIME_MODEL, APIError, Server, ServerConfig, build_app

__all__ = ["PRIME_MODEL", "APIError", "Server", "ServerConfig", "build_app", "serve"]


def serve(llm, config: ServerConfig | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "warning") -> None:
    """Serve `llm` over HTTP until interrupted (uvicorn; one process, the engine in its own thread)."""
    import uvicorn

    uvicorn.run(build_app(Server(llm, config)), host=host, port=port, log_level=log_level, access_log=False)
