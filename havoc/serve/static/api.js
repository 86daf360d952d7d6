// The page's client of havoc's public OpenAI-compatible API: GET /v1/models, POST /v1/chat/completions
// with stream: true (server-sent events), and the pictures PRIME's tool calls drew (GET /v1/prime/plots/ID).
// Nothing here is private to the page: any client may make the same requests.

const PLOT_PATH = /^\/v1\/prime\/plots\/[A-Za-z0-9_-]{8,64}$/;
const PICTURE_TYPES = new Set(["image/png", "image/svg+xml"]);

export class APIError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

function headers(apiKey, json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (apiKey) h["Authorization"] = `Bearer ${apiKey}`;
  return h;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON: the status line says enough */ }
  if (response.status === 401) message += " (set the API key in Settings)";
  return new APIError(message, response.status);
}

/** The ids of the models the server serves. */
export async function listModels(apiKey) {
  const r = await fetch("/v1/models", { headers: headers(apiKey, false) });
  if (!r.ok) throw await failure(r);
  const body = await r.json();
  return (body.data || []).map((m) => String(m.id));
}

/**
 * POST /v1/chat/completions with stream: true; yields each chunk (parsed JSON) until [DONE].
 * Aborting `signal` closes the connection, and the server aborts the request when it sees that.
 */
export async function* streamChat(body, apiKey, signal) {
  const r = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(apiKey, true), body: JSON.stringify({ ...body, stream: true }), signal,
  });
  if (!r.ok) throw await failure(r);
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new APIError(chunk.error.message || "the server reported an error", 500);
      yield chunk;
    }
  }
  throw new APIError("the stream ended before [DONE]", 0);
}

/**
 * A picture a PRIME tool call drew, as a blob: URL (the caller revokes it). Only this server's own
 * /v1/prime/plots/ID paths are fetched, and only PNG or SVG bodies are taken.
 */
export async function fetchPicture(url, apiKey) {
  if (typeof url !== "string" || !PLOT_PATH.test(url)) throw new APIError("not a picture of this server", 0);
  const r = await fetch(url, { headers: headers(apiKey, false) });
  if (!r.ok) throw await failure(r);
  const blob = await r.blob();
  if (!PICTURE_TYPES.has(blob.type)) throw new APIError(`unexpected picture type ${blob.type}`, 0);
  return URL.createObjectURL(blob);
}
