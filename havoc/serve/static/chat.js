// havoc's chat page: settings, conversations (this browser's localStorage), sending, streaming, stopping.
// A client of the server's public API only (api.js); messages are drawn by render.js, as text.

import { listModels, streamChat } from "./api.js";
import { loadConversations, loadSettings, newConversation, saveConversations, saveSettings } from "./store.js";
import { Follower, PlainView, PrimeView, el, userMessage } from "./render.js";

const PRIME_MODEL = "havoc-prime";
const $ = (id) => document.getElementById(id);

const ui = {
  app: $("app"), messages: $("messages"), form: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
  status: $("status"), prime: $("prime"), model: $("model"), temperature: $("temperature"), maxTokens: $("max-tokens"),
  system: $("system"), stop_: $("stop-strings"), apiKey: $("api-key"), list: $("conversations"), newChat: $("new-chat"),
  sidebar: $("sidebar"), settings: $("settings"), toggleSidebar: $("toggle-sidebar"), toggleSettings: $("toggle-settings"),
  primeNote: $("prime-note"), closeSettings: $("close-settings"), serverNote: $("server-note"), scrim: $("scrim"),
};

const state = {
  settings: loadSettings(),
  conversations: loadConversations(),
  current: null,       // the conversation shown
  running: null,       // {controller, view, message} while a reply streams
  pictures: [],        // blob: URLs of the pictures shown (revoked when the view is redrawn)
  models: [],
};
const follower = new Follower(ui.messages);

// ---------------------------------------------------------------------------------------------- settings
function showSettings() {
  const s = state.settings;
  ui.prime.checked = Boolean(s.prime);
  ui.temperature.value = s.temperature;
  ui.maxTokens.value = s.maxTokens;
  ui.system.value = s.system;
  ui.stop_.value = s.stop;
  ui.apiKey.value = s.apiKey;
  ui.primeNote.hidden = !s.prime;
}

function readSettings() {
  const s = state.settings;
  s.prime = ui.prime.checked && !ui.prime.disabled;
  if (ui.model.value) s.model = ui.model.value;
  const t = Number(ui.temperature.value);
  s.temperature = Number.isFinite(t) ? Math.min(2, Math.max(0, t)) : 0.7;
  const n = Math.floor(Number(ui.maxTokens.value));
  s.maxTokens = Number.isFinite(n) && n >= 1 ? n : 512;
  s.system = ui.system.value;
  s.stop = ui.stop_.value;
  s.apiKey = ui.apiKey.value.trim();
  ui.primeNote.hidden = !s.prime;
  saveSettings(s);
}

async function loadModels() {
  ui.serverNote.textContent = "";
  try {
    state.models = await listModels(state.settings.apiKey);
  } catch (e) {
    ui.serverNote.textContent = `Cannot list the models: ${e.message}`;
    return;
  }
  const plain = state.models.filter((m) => m !== PRIME_MODEL);
  ui.model.replaceChildren(...plain.map((m) => el("option", { value: m }, m)));
  if (plain.includes(state.settings.model)) ui.model.value = state.settings.model;
  state.settings.model = ui.model.value;
  const hasPrime = state.models.includes(PRIME_MODEL);
  ui.prime.disabled = !hasPrime;
  if (!hasPrime) ui.prime.checked = false;
  readSettings();
}

function setPanel(panel, button, open) {
  panel.classList.toggle("open", open);
  button.setAttribute("aria-expanded", String(open));
  ui.scrim.hidden = !(ui.sidebar.classList.contains("open") || ui.settings.classList.contains("open"));
}

// ---------------------------------------------------------------------------------------------- conversations
function persist() {
  state.conversations = saveConversations(state.conversations);
}

function drawList() {
  const items = [...state.conversations].sort((a, b) => b.updated - a.updated).map((c) => {
    const open = el("button", { class: "conv-open", type: "button", "aria-current": c === state.current ? "true" : null }, c.title);
    open.addEventListener("click", () => { select(c); setPanel(ui.sidebar, ui.toggleSidebar, false); });
    const del = el("button", { class: "conv-delete", type: "button", "aria-label": `Delete conversation: ${c.title}` }, "×");
    del.addEventListener("click", () => remove(c));
    return el("li", {}, open, del);
  });
  ui.list.replaceChildren(...items);
}

function select(conversation) {
  if (state.running) stop();
  state.current = conversation;
  for (const url of state.pictures) URL.revokeObjectURL(url);
  state.pictures = [];
  ui.messages.replaceChildren(...conversation.messages.map(draw));
  drawList();
  follower.bottom();
}

function remove(conversation) {
  state.conversations = state.conversations.filter((c) => c !== conversation);
  persist();
  if (state.current === conversation) select(state.conversations[0] || startNew());
  else drawList();
}

function startNew() {
  const c = newConversation();
  state.conversations.push(c);
  return c;
}

function context() {
  return { apiKey: state.settings.apiKey, pictures: state.pictures, follow: () => follower.poke() };
}

/** A stored message drawn again (a PRIME reply replays its parts in the order they streamed). */
function draw(m) {
  if (m.role === "user") return userMessage(m.content);
  let view;
  if (m.prime) {
    view = new PrimeView(context());
    if (m.routing) view.routing(m.routing);
    for (const part of m.parts || []) {
      if (part.call) view.toolCall(part.call);
      else view.reasoning(part.text);
    }
    if (m.verification) view.verification(m.verification);
    if (m.content) view.final(m.content);
    else view.reader.end();
  } else {
    view = new PlainView(m.model, context());
    view.content(m.content || "");
  }
  finishView(view, m);
  return view.root;
}

function finishView(view, m) {
  const bits = [];
  if (m.stopped) bits.push(el("span", { class: "badge warn" }, "stopped"));
  if (m.error) bits.push(el("p", { class: "error", role: "alert" }, m.error));
  if (m.stats) bits.push(el("span", { class: "stats" }, `${m.stats.generated_tokens} tokens · ${m.stats.seconds} s`));
  const answer = view.answerText;
  if (answer) {
    const copy = el("button", { class: "copy", type: "button" }, "Copy answer");
    copy.addEventListener("click", () => copyText(answer, copy));
    bits.push(copy);
  }
  view.root.append(el("footer", { class: "msg-foot" }, ...bits));
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {  // no clipboard API (a page served over plain http to another machine): the old way
    const area = el("textarea", { class: "visually-hidden", "aria-hidden": "true" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy answer"; }, 1500);
}

// ---------------------------------------------------------------------------------------------- sending
function requestBody(conversation) {
  const s = state.settings;
  if (s.prime) {  // PRIME answers the last user message, with its own system prompt
    const last = conversation.messages.filter((m) => m.role === "user").at(-1);
    return { model: PRIME_MODEL, messages: [{ role: "user", content: last.content }], max_tokens: s.maxTokens,
      temperature: s.temperature };
  }
  const messages = [];
  if (s.system.trim()) messages.push({ role: "system", content: s.system });
  for (const m of conversation.messages) {
    if (m.role === "user") messages.push({ role: "user", content: m.content });
    else if (m.content) messages.push({ role: "assistant", content: m.content });
  }
  const stop = s.stop.split("\n").map((x) => x.replace(/\\n/g, "\n")).filter((x) => x.length).slice(0, 16);
  return { model: s.model, messages, max_tokens: s.maxTokens, temperature: s.temperature,
    ...(stop.length ? { stop } : {}) };
}

function busy(on) {
  ui.send.hidden = on;
  ui.stop.hidden = !on;
  ui.app.classList.toggle("running", on);
}

async function send(text) {
  readSettings();
  const conversation = state.current;
  conversation.messages.push({ role: "user", content: text });
  if (conversation.title === "New chat") conversation.title = text.length > 48 ? `${text.slice(0, 47)}…` : text;
  conversation.updated = Date.now();
  ui.messages.append(userMessage(text));
  const body = requestBody(conversation);
  const prime = body.model === PRIME_MODEL;
  const message = { role: "assistant", model: body.model, prime, content: "", parts: [] };
  conversation.messages.push(message);
  persist();
  drawList();
  const view = prime ? new PrimeView(context()) : new PlainView(body.model, context());
  view.root.setAttribute("aria-busy", "true");
  ui.messages.append(view.root);
  follower.bottom();
  const controller = new AbortController();
  state.running = { controller, view, message };
  busy(true);
  ui.status.textContent = prime ? "PRIME is working…" : "Generating…";
  try {
    for await (const chunk of streamChat(body, state.settings.apiKey, controller.signal)) {
      take(chunk, view, message);
    }
    ui.status.textContent = "Answer ready.";
  } catch (e) {
    if (controller.signal.aborted) {
      message.stopped = true;
      ui.status.textContent = "Stopped.";
    } else {
      message.error = e.message || String(e);
      ui.status.textContent = `Error: ${message.error}`;
    }
  } finally {
    if (prime && !message.content && !message.stopped) view.reader.end();
    if (!prime) message.content = view.answerText;
    view.root.removeAttribute("aria-busy");
    finishView(view, message);
    state.running = null;
    busy(false);
    conversation.updated = Date.now();
    persist();
    follower.poke();
    ui.prompt.focus();
  }
}

/** One streamed chunk into the view and the stored message. */
function take(chunk, view, message) {
  const p = chunk.prime;
  if (p && p.routing && !p.verification) {
    message.routing = p.routing;
    view.routing(p.routing);
  }
  if (p && p.tool_call) {
    message.parts.push({ call: p.tool_call });
    view.toolCall(p.tool_call);
  }
  const choice = (chunk.choices || [])[0];
  if (!choice) return;
  const d = choice.delta || {};
  const reasoning = d.reasoning_content ?? d.reasoning;
  if (reasoning) {
    const last = message.parts.at(-1);
    if (last && last.text !== undefined) last.text += reasoning;
    else message.parts.push({ text: reasoning });
    view.reasoning(reasoning);
  }
  if (message.prime) {
    if (p && p.verification) {
      message.verification = p.verification;
      message.stats = p.stats;
      view.verification(p.verification);
    }
    if (d.content !== undefined && d.content !== null && choice.finish_reason) {
      message.content = d.content;
      view.final(d.content);
    }
  } else if (d.content) {
    view.content(d.content);
  }
  follower.poke();
}

function stop() {
  if (state.running) state.running.controller.abort();
}

// ---------------------------------------------------------------------------------------------- wiring
ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || state.running) return;
  ui.prompt.value = "";
  send(text);
});
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.form.requestSubmit();
  }
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") {
    if (state.running) stop();
    setPanel(ui.sidebar, ui.toggleSidebar, false);
    setPanel(ui.settings, ui.toggleSettings, false);
  }
});
ui.stop.addEventListener("click", stop);
ui.newChat.addEventListener("click", () => {
  const empty = state.conversations.find((c) => !c.messages.length);
  select(empty || startNew());
  setPanel(ui.sidebar, ui.toggleSidebar, false);
  ui.prompt.focus();
});
for (const input of [ui.prime, ui.model, ui.temperature, ui.maxTokens, ui.system, ui.stop_]) {
  input.addEventListener("change", readSettings);
}
ui.apiKey.addEventListener("change", () => { readSettings(); loadModels(); });
ui.toggleSidebar.addEventListener("click", () => setPanel(ui.sidebar, ui.toggleSidebar, !ui.sidebar.classList.contains("open")));
ui.toggleSettings.addEventListener("click", () => setPanel(ui.settings, ui.toggleSettings, !ui.settings.classList.contains("open")));
ui.closeSettings.addEventListener("click", () => setPanel(ui.settings, ui.toggleSettings, false));
ui.scrim.addEventListener("click", () => {
  setPanel(ui.sidebar, ui.toggleSidebar, false);
  setPanel(ui.settings, ui.toggleSettings, false);
});

showSettings();
select(state.conversations.sort((a, b) => b.updated - a.updated)[0] || startNew());
loadModels().then(() => { document.body.dataset.ready = "true"; });
