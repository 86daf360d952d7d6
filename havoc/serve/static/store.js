// Settings and conversations, kept in this browser's localStorage (nothing is kept on the server).
//
// A conversation: {id, title, updated, messages}. A user message: {role: "user", content}. An assistant
// message: {role: "assistant", model, prime, content (the answer), parts, routing, verification, stats,
// stopped, error}, where parts is PRIME's stream in order: [{text}, {call}] (text pieces merged), enough
// to draw the message again exactly as it streamed.

const SETTINGS_KEY = "havoc.chat.settings.v1";
const CHATS_KEY = "havoc.chat.conversations.v1";
const MAX_CONVERSATIONS = 50;

export const DEFAULT_SETTINGS = {
  model: "", prime: false, temperature: 0.7, maxTokens: 512, system: "", stop: "", apiKey: "",
};

function read(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw ? JSON.parse(raw) : fallback;
  } catch (_) {
    return fallback;  // storage off or a damaged entry: start afresh rather than fail
  }
}

export function loadSettings() {
  return { ...DEFAULT_SETTINGS, ...read(SETTINGS_KEY, {}) };
}

export function saveSettings(settings) {
  try {
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
  } catch (_) { /* storage full or off: settings live for this visit only */ }
}

export function loadConversations() {
  const list = read(CHATS_KEY, []);
  return Array.isArray(list) ? list.filter((c) => c && typeof c.id === "string" && Array.isArray(c.messages)) : [];
}

/** Save, newest first; past the limit, or when storage is full, the oldest conversations go first. */
export function saveConversations(list) {
  let keep = [...list].sort((a, b) => b.updated - a.updated).slice(0, MAX_CONVERSATIONS);
  while (keep.length) {
    try {
      localStorage.setItem(CHATS_KEY, JSON.stringify(keep));
      return keep;
    } catch (_) {
      keep = keep.slice(0, -1);
    }
  }
  try { localStorage.removeItem(CHATS_KEY); } catch (_) { /* nothing to do */ }
  return keep;
}

export function newConversation() {
  const id = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2));
  return { id, title: "New chat", updated: Date.now(), messages: [] };
}
