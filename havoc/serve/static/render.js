// Drawing messages. Every piece of text that came from a model, a tool or a user goes into the page as a
// text node (textContent, createTextNode, appendData): never as HTML, so `<script>` written by a model
// shows as those characters. Pictures are blob: URLs of this server's own tool outputs (api.fetchPicture).

import { fetchPicture } from "./api.js";

/** A new element: el("div", {class: "x", "aria-label": "y"}, child, "text", ...). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "hidden" || k === "open") node[k] = Boolean(v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** A text node that grows: streamed text is appended to it in place. */
function growing(parent) {
  const text = document.createTextNode("");
  parent.append(text);
  return text;
}

/** JSON, indented, with short lists of plain values kept on one line ("data": [10.1, 9.8, ...]). */
export function pretty(value, indent = "") {
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    if (value.every((v) => v === null || typeof v !== "object")) {
      const items = value.map((v) => JSON.stringify(v));
      const line = `[${items.join(", ")}]`;
      if (line.length <= 100) return line;
      const lines = [""];  // long lists of plain values: as many to a line as fit in 100 characters
      for (const item of items) {
        if (lines.at(-1) && lines.at(-1).length + item.length > 96) lines.push("");
        lines[lines.length - 1] += `${lines.at(-1) ? " " : ""}${item},`;
      }
      lines[lines.length - 1] = lines.at(-1).slice(0, -1);
      return `[\n${lines.map((l) => inner + l).join("\n")}\n${indent}]`;
    }
    return `[\n${value.map((v) => inner + pretty(v, inner)).join(",\n")}\n${indent}]`;
  }
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (!keys.length) return "{}";
    return `{\n${keys.map((k) => `${inner}${JSON.stringify(k)}: ${pretty(value[k], inner)}`).join(",\n")}\n${indent}}`;
  }
  return JSON.stringify(value) ?? String(value);
}

const RESOLUTION = {
  model: ["written by the model", "ok"],
  regenerated: ["written by the model (second try)", "ok"],
  recovered_from_prompt: ["recovered from the prompt", "warn"],
  failed: ["failed: no arguments", "bad"],
};
const ROLES = [["advocate", "Advocate"], ["attack", "Attack"], ["pragmatist", "Pragmatist"]];
const TAGS = new Set(["reason", "tool", "result", "advocate", "attack", "pragmatist"]);
const PICTURE_NAMES = {
  control_chart: "Control chart", main_effects: "Main-effects plot", interaction: "Interaction plot",
  residuals: "Regression residual plots",
};

/**
 * Splits PRIME's visible text into its sections as it streams: outside a section only an opening tag
 * (`<reason>`, `<tool>`, `<result>`, `<advocate>`, `<attack>`, `<pragmatist>`) is read as one, inside
 * one only its own closing tag; everything else is text. A tag cut between two pieces waits for the next.
 */
export class TagReader {
  constructor(sink) {
    this.sink = sink;  // {open(tag), text(s), close(tag)}
    this.inside = null;
    this.buffer = "";
  }

  feed(s) {
    this.buffer += s;
    this.drain(false);
  }

  end() {
    this.drain(true);
  }

  drain(final) {
    while (this.buffer) {
      const lt = this.buffer.indexOf("<");
      if (lt !== 0) {
        const upto = lt < 0 ? this.buffer.length : lt;
        this.sink.text(this.buffer.slice(0, upto));
        this.buffer = this.buffer.slice(upto);
        continue;
      }
      const want = this.inside ? [`</${this.inside}>`] : [...TAGS].map((t) => `<${t}>`);
      const hit = want.find((t) => this.buffer.startsWith(t));
      if (hit) {
        this.buffer = this.buffer.slice(hit.length);
        if (this.inside) {
          const tag = this.inside;
          this.inside = null;
          this.sink.close(tag);
        } else {
          this.inside = hit.slice(1, -1);
          this.sink.open(this.inside);
        }
        continue;
      }
      if (!final && want.some((t) => t.startsWith(this.buffer))) return;  // more of the tag may come
      this.sink.text("<");
      this.buffer = this.buffer.slice(1);
    }
  }
}

/** Scroll follows the stream only while the reader is at the bottom. */
export class Follower {
  constructor(scroller) {
    this.scroller = scroller;
    this.pinned = true;
    this.frame = 0;
    scroller.addEventListener("scroll", () => {
      const s = this.scroller;
      this.pinned = s.scrollHeight - s.scrollTop - s.clientHeight < 48;
    }, { passive: true });
  }

  poke() {
    if (!this.pinned || this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.scroller.scrollTop = this.scroller.scrollHeight;
    });
  }

  bottom() {
    this.pinned = true;
    this.poke();
  }
}

export function userMessage(content) {
  return el("article", { class: "msg user", "aria-label": "You" },
    el("h2", { class: "who" }, "You"), el("div", { class: "text" }, content));
}

/** An assistant message of the plain model: the answer streams into one text node. */
export class PlainView {
  constructor(model, ctx) {
    this.ctx = ctx;
    this.root = el("article", { class: "msg assistant", "aria-label": `Answer from ${model}` },
      el("h2", { class: "who" }, model));
    this.answerBox = el("div", { class: "text answer-text" });
    this.answer = growing(this.answerBox);
    this.root.append(this.answerBox);
  }

  content(s) {
    this.answer.appendData(s);
  }

  get answerText() {
    return this.answer.data;
  }
}

/**
 * An assistant message of PRIME, drawn as its parts arrive: the route, reasoning steps (collapsible), tool
 * calls as cards, the debate in three columns, then the verification checklist and the answer.
 */
export class PrimeView {
  constructor(ctx) {
    this.ctx = ctx;  // {apiKey, pictures: [blob URLs to revoke], follow()}
    this.root = el("article", { class: "msg assistant prime", "aria-label": "Answer from PRIME" },
      el("h2", { class: "who" }, "PRIME"));
    this.trace = el("div", { class: "trace" });
    this.root.append(this.trace);
    this.reader = new TagReader(this);
    this.last = null;      // the block text goes to: {kind, ...}
    this.card = null;      // the newest tool card
    this.line = null;      // the outside-a-section line being written
    this.direct = false;
    this.answerBox = null;
    this.answer = null;
  }

  // ------------------------------------------------------------------ structure from the `prime` field
  routing(r) {
    this.direct = Boolean(r.direct);
    const facts = el("p", { class: "route-facts" },
      el("span", { class: `budget budget-${String(r.budget).toLowerCase()}` }, String(r.budget)), " ",
      el("span", { class: "task" }, String(r.task_type)),
      r.tool ? el("span", { class: "tool-name" }, ` · ${r.tool}${r.operation ? ` · ${r.operation}` : ""}`) : null,
      typeof r.score === "number" ? el("span", { class: "score" }, ` · score ${r.score}`) : null,
      r.direct ? el("span", { class: "score" }, " · answered directly") : null);
    const reasons = el("ul", { class: "reasons" }, ...(r.reasons || []).map((x) => el("li", {}, String(x))));
    this.root.insertBefore(el("section", { class: "route", "aria-label": "Route" },
      el("h3", {}, "Route"), facts, reasons), this.trace);
    if (this.direct) this.openAnswer();
  }

  toolCall(call) {
    const card = this.card && !this.card.call ? this.card : this.newCard();
    card.call = call;
    const [label, tone] = RESOLUTION[call.resolution] || [String(call.resolution), "warn"];
    card.badge.textContent = label;
    card.badge.className = `badge ${tone}`;
    card.name.textContent = [call.tool, call.operation, call.label].filter(Boolean).join(" · ");
    const spans = [...card.attempts.children];
    if (spans.length) {
      // A call recovered from the prompt is written by PRIME after the model's attempts: the last one.
      const byPrime = call.resolution === "recovered_from_prompt" ? 1 : 0;
      spans.forEach((li, i) => {  // each try was labelled as it started (below): only the writer's name changes
        li.querySelector(".who-wrote").textContent =
          i >= spans.length - byPrime ? "PRIME, from the prompt" : `model, try ${i + 1}`;
      });
      const tries = spans.length - byPrime;
      card.attemptsSummary.textContent = `How the call was written: ${tries} model ${tries === 1 ? "try" : "tries"}` +
        (byPrime ? ", then the prompt's arguments" : "");
      card.attemptsBox.open = false;
    }
    const body = card.body;
    body.append(el("h4", {}, "Arguments"), el("pre", { class: "json args" }, call.args ? pretty(call.args) : "none"));
    if (call.error) body.append(el("p", { class: "error" }, `The tool refused: ${call.error}`));
    if (call.result) {
      card.resultText = el("p", { class: "result-summary" }, call.summary || "");
      body.append(el("h4", {}, "Result"), card.resultText,
        el("details", { class: "full-result" }, el("summary", {}, "Full result (JSON)"),
          el("pre", { class: "json" }, pretty(call.result))));
    }
    if (call.plot) body.append(this.picture(call));
    this.last = null;
    this.ctx.follow();
  }

  picture(call) {
    const p = call.plot;
    const name = PICTURE_NAMES[p.kind] || "Picture";
    const img = el("img", {
      class: "plot", alt: `${name} drawn by ${call.tool}${call.operation ? ` (${call.operation})` : ""}`,
      width: p.width_px, height: p.height_px, decoding: "async",
    });
    // The picture's box has its final shape before it loads: nothing below it moves when it does.
    img.style.aspectRatio = `${Number(p.width_px) || 4} / ${Number(p.height_px) || 3}`;
    const caption = el("figcaption", {}, `${name} · ${p.format.toUpperCase()} · drawn by the tool`);
    const figure = el("figure", { class: "picture loading" }, img, caption);
    fetchPicture(p.url, this.ctx.apiKey).then((url) => {
      this.ctx.pictures.push(url);
      img.addEventListener("load", () => figure.classList.remove("loading"), { once: true });
      img.src = url;
    }).catch((e) => {
      figure.classList.remove("loading");
      figure.classList.add("missing");
      caption.textContent = `${name}: not available (${e.message})`;
    });
    return figure;
  }

  verification(v) {
    const items = (v.checks || []).map((c) => el("li", { class: c.passed ? "pass" : "fail" },
      el("span", { class: "mark", "aria-hidden": "true" }, c.passed ? "✓" : "✗"),
      el("span", { class: "visually-hidden" }, c.passed ? "passed: " : "failed: "),
      el("strong", {}, String(c.name)), " ", el("span", { class: "detail" }, String(c.detail || ""))));
    const recovered = (v.recovered || []).length
      ? el("p", { class: "recovered" }, `Recovered: ${v.recovered.join("; ")}`) : null;
    this.root.append(el("section", { class: `verify ${v.passed ? "passed" : "failed"}`, "aria-label": "Verification" },
      el("h3", {}, `Verification ${v.passed ? "passed" : "failed"}`), el("ul", { class: "checklist" }, ...items),
      recovered));
  }

  final(content) {
    this.reader.end();
    this.openAnswer();
    this.answer.data = content;
  }

  openAnswer() {
    if (this.answerBox) return;
    this.answer = document.createTextNode("");
    this.answerBox = el("section", { class: "answer", "aria-label": "Answer" }, el("h3", {}, "Answer"),
      el("div", { class: "text answer-text" }, this.answer));
    this.root.append(this.answerBox);
  }

  get answerText() {
    return this.answer ? this.answer.data : "";
  }

  // ------------------------------------------------------------------ the visible text, section by section
  reasoning(s) {
    this.reader.feed(s);
    this.ctx.follow();
  }

  open(tag) {
    this.line = null;
    if (tag === "reason") {
      const summary = el("summary", {}, "Step");
      const body = el("p", { class: "reason-text" });
      const box = el("details", { class: "step", open: true }, summary, body);
      this.trace.append(box);
      this.last = { kind: "reason", summary, text: growing(body), raw: "" };
    } else if (tag === "tool") {
      const card = this.card && !this.card.call ? this.card : this.newCard();
      const pre = el("pre", { class: "attempt-text" });
      // Labelled as it starts, so that naming the writer once the call is settled changes a word, not a height.
      const n = card.attempts.children.length + 1;
      card.attempts.append(el("li", {}, el("span", { class: "who-wrote" }, `model, try ${n}`), pre));
      this.last = { kind: "tool", text: growing(pre) };
    } else if (tag === "result") {
      const card = this.card || this.newCard();
      if (!card.resultText) {
        card.resultText = el("p", { class: "result-summary" });
        card.body.append(el("h4", {}, "Result"), card.resultText);
      }
      card.resultText.textContent = "";
      this.last = { kind: "result", text: growing(card.resultText) };
    } else {
      let debate = this.debate;
      if (!debate || debate.filled.has(tag)) debate = this.newDebate();
      debate.filled.add(tag);
      this.last = { kind: "debate", text: growing(debate.columns[tag]) };
    }
  }

  close() {
    this.last = null;
  }

  text(s) {
    if (this.reader.inside) {
      const last = this.last;
      if (!last) return;
      if (last.kind !== "reason") {
        last.text.appendData(s);
        return;
      }
      // "Step s2, compute the t test with the statistics tool: ..." -> the title above, the rest below
      last.raw += s;
      const [title, rest] = splitStep(last.raw);
      if (last.summary.textContent !== title) last.summary.textContent = title;
      if (rest.startsWith(last.text.data)) last.text.appendData(rest.slice(last.text.data.length));
      else last.text.data = rest;
      return;
    }
    if (this.direct) {  // no sections: the model's own answer, streaming
      this.openAnswer();
      this.answer.appendData(s);
      return;
    }
    // Between sections: PRIME's notes, a line each; "[verification: ...]" and "[recovered: ...]" go with
    // the call they judge (the newest attempt of a card still waiting for its record).
    const parts = s.split("\n");
    parts.forEach((part, i) => {
      if (i > 0) this.line = null;
      if (!part) return;
      if (!this.line) {
        if (!part.trim()) return;
        const note = el("p", { class: "note" });
        const attempt = this.card && !this.card.call ? this.card.attempts.lastElementChild : null;
        (attempt || this.trace).append(note);
        this.line = growing(note);
      }
      this.line.appendData(part);
    });
  }

  newCard() {
    const badge = el("span", { class: "badge pending" }, "calling…");
    const name = el("span", { class: "tool-name" }, "tool call");
    const attempts = el("ol", { class: "attempts" });
    const attemptsSummary = el("summary", {}, "The model's calls");
    const attemptsBox = el("details", { class: "attempts-box", open: true }, attemptsSummary, attempts);
    const body = el("div", { class: "card-body" });
    const root = el("section", { class: "card", "aria-label": "Tool call" },
      el("h3", { class: "card-head" }, name, " ", badge), attemptsBox, body);
    this.trace.append(root);
    this.card = { root, badge, name, attempts, attemptsBox, attemptsSummary, body, call: null, resultText: null };
    return this.card;
  }

  newDebate() {
    const columns = {};
    const cols = ROLES.map(([role, label]) => {
      const p = el("p", { class: "debate-text" });
      columns[role] = p;
      return el("section", { class: `col ${role}`, "aria-label": label }, el("h4", {}, label), p);
    });
    const root = el("div", { class: "debate", role: "group", "aria-label": "Debate" }, ...cols);
    this.trace.append(root);
    this.debate = { root, columns, filled: new Set() };
    return this.debate;
  }
}

/** A reasoning step's title and text: "Step s1, read the data: ..." -> ["Step s1 · read the data", "..."]. */
function splitStep(raw) {
  const m = /^\s*(Step [^,:\n]+),\s*([^:\n]*)(?::\s*|$)/.exec(raw);
  if (m) return [`${m[1]} · ${m[2].trim()}`, raw.slice(m[0].length)];
  const head = raw.trim().split(/[:.\n]/)[0];
  return [head.length > 80 ? `${head.slice(0, 79)}…` : head || "Step", raw.trim() === head ? "" : raw.trim()];
}
