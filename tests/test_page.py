"""The chat page (`havoc serve` at /) in a real browser: Debian's headless Chromium driven by Playwright against
a real server on 127.0.0.1, and the wire format the page reads.

Two servers: `havoc serve` itself (the CLI in a subprocess, the tiny random model) for the page, PRIME and
its pictures; and the same app in-process with an API key, where a test may script the plain model's tokens
(a logits hook installed on that one server object, never in the package) to make a reply that is slow
enough to watch and stop, or that writes `<script>`. SmolLM2 (marked `model`) answers for real.

Screenshots of the main states go to HAVOC_PAGE_SCREENSHOTS, else to a folder under pytest's tmp dir
(printed in the report).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from .gguf_files import write_tiny_gguf
from .test_serve import HOST, ServerProcess, free_port, parse_metrics, smol_server  # noqa: F401 (a fixture)

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the test extra installs it; without it only the browser tests skip
    sync_playwright = None

STATIC = Path(__file__).resolve().parent.parent / "havoc" / "serve" / "static"
CHROMIUM = os.environ.get("HAVOC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
needs_browser = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="the browser tests need Chromium (apt-get install chromium) and Playwright (pip install playwright); "
           f"found chromium={CHROMIUM}, playwright={'yes' if sync_playwright else 'no'}")
KEY = "page-key"
CHART = "Make an I-MR control chart of [10.1, 9.8, 10.4, 10.0, 12.9, 10.2, 9.9, 10.1]"
REGRESSION = "Fit a linear regression of y on x: x = [1, 2, 3, 4, 5, 6], y = [2.1, 3.9, 6.2, 7.8, 10.1, 12.2]"
WAIT = 60_000  # ms: the longest any one step may take


# ------------------------------------------------------------------------------------------ servers
@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("page") / "tiny.gguf", meta={"llama.context_length": 4096})


@pytest.fixture(scope="module")
def served(tiny_gguf):
    s = ServerProcess("--model", str(tiny_gguf), "--served-model-name", "tiny", "--kv-cache-tokens", "8192")
    yield s
    s.stop()


class Script:
    """What the scripted server's plain model writes: `text`, one token every `delay` seconds, then the end."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.delay = 0.0

    def hook(self, tokenizer, eos: int):
        if self.text is None:
            return None
        ids = tokenizer.encode(self.text, add_bos=False) + [eos]
        delay, start = self.delay, []

        def force(seq, logits):
            if not start:
                start.append(len(seq))
            if delay:
                time.sleep(delay)
            logits.fill_(float("-inf"))
            logits[ids[min(len(seq) - start[0], len(ids) - 1)]] = 0.0

        return force


@pytest.fixture(scope="module")
def scripted(tiny_gguf):
    """The app in-process with an API key; `.script` sets what the plain model writes."""
    import uvicorn

    from havoc.llm import LLM
    from havoc.serve import Server, ServerConfig, build_app

    llm = LLM.load(tiny_gguf, kv_cache_tokens=8192)
    server = Server(llm, ServerConfig(model_name="tiny", api_key=KEY))
    script = Script()
    eos = min(llm.tokenizer.stop_ids)
    server.logit_bias_hook = lambda bias: script.hook(llm.tokenizer, eos)  # this test server only
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(build_app(server), host=HOST, port=port, log_level="error"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started, "the in-process server did not start"
    server.url, server.script = f"http://{HOST}:{port}", script
    yield server
    uv.should_exit = True
    thread.join(timeout=30)
    llm.close()


def metrics(url: str) -> dict[str, float]:
    return parse_metrics(httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text)


# ------------------------------------------------------------------------------------------ the browser
@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or sync_playwright is None:
        pytest.skip("no Chromium or Playwright")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=WAIT)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    where = os.environ.get("HAVOC_PAGE_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("page-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


# Layout shifts (the Layout Instability API) and page errors, recorded from the first script on. (The page's
# policy forbids evaluating strings: every wait_for_function below is given a function.)
RECORDER = """
window.__shifts = [];
window.__errors = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (!e.hadRecentInput) window.__shifts.push(e.value);
}).observe({type: "layout-shift", buffered: true});
window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
"""


def open_page(browser, url, *, width=1280, height=900, key=None):
    context = browser.new_context(viewport={"width": width, "height": height},
                                  permissions=["clipboard-read", "clipboard-write"])
    context.set_default_timeout(WAIT)
    page = context.new_page()
    page.add_init_script(RECORDER)
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready=true]")
    if key is not None:
        set_key(page, key)
    return page


def set_key(page, key):
    page.click("#toggle-settings")
    page.fill("#api-key", key)
    page.press("#api-key", "Tab")
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 0")
    page.click("#close-settings")


def ask(page, text):
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def use_prime(page, on=True):
    if page.is_checked("#prime") != on:
        page.click("label.switch")
    assert page.is_checked("#prime") == on


def wait_done(page):
    page.wait_for_selector("#app:not(.running) .msg.assistant:last-child .msg-foot")


def cls(page) -> float:
    return page.evaluate("window.__shifts.reduce((a, b) => a + b, 0)")


def no_horizontal_overflow(page) -> bool:
    return page.evaluate("document.scrollingElement.scrollWidth <= innerWidth && "
                         "document.getElementById('messages').scrollWidth <= document.getElementById('messages').clientWidth")


# ------------------------------------------------------------------------------------------ no browser
def test_the_page_is_served_from_the_package_with_a_strict_policy(served):
    r = httpx.get(served.url + "/", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "img-src 'self' blob:" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    refs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert refs and all(ref.startswith("/static/") or ref.startswith("#") for ref in refs), refs
    for ref in (x for x in refs if x.startswith("/static/")):
        assert httpx.get(served.url + ref, timeout=10).status_code == 200, ref
    for f in STATIC.iterdir():  # nothing from another origin: the page works with no internet
        text = f.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, never fetched
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text), f.name
    assert "error" in httpx.get(served.url + "/static/nope.js", timeout=10).json()
    for bad in ("/static/nope.js", "/static/..%2fapp.py", "/static/%2e%2e/app.py", "/static/%2e%2e%2fapp.py"):
        assert httpx.get(served.url + bad, timeout=10).status_code == 404, bad


def test_the_page_never_writes_model_text_as_html():
    """The page builds every node itself; none of the ways to parse a string as HTML or code appear."""
    for f in STATIC.glob("*.js"):
        text = f.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                     "setAttribute(\"on", "srcdoc"):
            assert sink not in text, f"{f.name} uses {sink}"


def test_prime_streams_its_route_first_then_each_call_with_its_picture(served):
    body = {"model": "havoc-prime", "stream": True, "messages": [{"role": "user", "content": CHART}]}
    chunks = []
    with httpx.stream("POST", served.url + "/v1/chat/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    first = chunks[0]
    assert first["choices"][0]["delta"] == {"role": "assistant"}
    route = first["prime"]["routing"]
    assert route["task_type"] == "spc" and route["reasons"] and route["direct"] is False
    calls = [c["prime"]["tool_call"] for c in chunks if "tool_call" in c.get("prime", {})]
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop" and last["prime"]["verification"]["checks"]
    assert last["prime"]["tool_calls"] == calls  # streamed as resolved, then all of them again at the end
    chart = calls[0]
    assert chart["operation"] == "control_chart" and chart["resolution"] in ("model", "regenerated", "recovered_from_prompt")
    assert "plot" not in chart["result"] and chart["result"]["charts"]
    # the call's chunk comes before the <result> text that reports it
    at = next(i for i, c in enumerate(chunks) if "tool_call" in c.get("prime", {}))
    text_after = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks[at:] if c["choices"])
    assert text_after.lstrip().startswith("<result>")
    plot = chart["plot"]
    assert plot["kind"] == "control_chart" and plot["format"] == "png" and re.fullmatch(r"/v1/prime/plots/[\w-]+", plot["url"])
    png = httpx.get(served.url + plot["url"], timeout=10)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png.content[16:20], "big") == plot["width_px"]
    assert httpx.get(served.url + "/v1/prime/plots/not-a-picture", timeout=10).status_code == 404
    # the same structure without streaming
    whole = httpx.post(served.url + "/v1/chat/completions", json={**body, "stream": False}, timeout=120).json()
    call = whole["prime"]["tool_calls"][0]
    assert call["args"] == chart["args"] and call["plot"]["url"] != plot["url"]  # a new run, a new picture


def test_prime_reports_its_route_and_calls_in_order_with_its_text(scripted):
    """What the stream is made of: generate_with_prime's on_event, in order with on_text."""
    from havoc.errors import PrimeError
    from havoc.prime import generate_with_prime

    seen = []
    out = generate_with_prime(REGRESSION, llm=scripted.llm, max_new_tokens=200, plots="svg",
                              on_text=lambda t: seen.append(("text", t)), on_event=lambda k, d: seen.append((k, d)))
    assert seen[0] == ("routing", out.routing) and out.routing["direct"] is False
    calls = [d for k, d in seen if k == "tool_call"]
    assert calls == out.tool_calls and [c["operation"] for c in calls] == ["regression", "normality"]
    for c in calls:  # each call is reported after the text that asked for it and before its <result>
        at = next(i for i, (k, d) in enumerate(seen) if d is c)
        assert "</tool>" in "".join(d for k, d in seen[:at] if k == "text")
        assert next(d for k, d in seen[at:] if k == "text").startswith("<result>")
    fit = calls[0]
    plot = fit["plot"]
    assert plot["kind"] == "residuals" and plot["format"] == "svg" and Path(plot["path"]).read_text().lstrip().startswith("<")
    assert "plot" not in fit["result"] and "plot" not in (fit["args"] or {})  # the picture is beside the figures
    assert "plot" not in calls[1]  # a normality check draws nothing
    quiet = generate_with_prime(REGRESSION, llm=scripted.llm, max_new_tokens=200)
    assert all("plot" not in c for c in quiet.tool_calls) and quiet.answer == out.answer
    with pytest.raises(PrimeError, match="plots"):
        generate_with_prime(REGRESSION, llm=scripted.llm, plots="jpg")


def test_pictures_need_the_key_and_old_ones_are_deleted(scripted):
    from havoc.tools import default_registry

    r = httpx.post(scripted.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
                   json={"model": "havoc-prime", "messages": [{"role": "user", "content": CHART}]}).json()
    url = r["prime"]["tool_calls"][0]["plot"]["url"]
    assert httpx.get(scripted.url + url, timeout=10).status_code == 401
    assert httpx.get(scripted.url + url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10).status_code == 200
    store = scripted.plots
    root = default_registry().plot_dir
    files = []
    for i in range(3):
        f = root / f"extra-{i}.png"
        f.write_bytes(b"\x89PNG\r\n\x1a\n")
        files.append(f)
    limit, store.limit = store.limit, 2
    try:
        ids = [store.add({"path": str(f), "format": "png"}) for f in files]
        assert all(ids) and not files[0].exists() and files[1].exists() and files[2].exists()  # oldest deleted
        assert store.get(ids[0]) is None and store.get(ids[2])[0] == files[2].resolve()
        outside = root.parent / "not-a-tool-plot.png"
        outside.write_bytes(b"x")
        assert store.add({"path": str(outside), "format": "png"}) is None  # only the registry's own pictures
        outside.unlink()
    finally:
        store.limit = limit


# ------------------------------------------------------------------------------------------ in the browser
@needs_browser
def test_plain_chat_streams_with_the_settings_and_keeps_conversations(scripted, browser, shots):
    s = scripted.script
    s.text, s.delay = "Streaming, one token at a time: " + "alpha beta gamma delta " * 12, 0.01
    page = open_page(browser, scripted.url)
    assert "API key" in page.text_content("#server-note")  # the server wants a key and said so
    set_key(page, KEY)
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == ["tiny"]
    page.click("#toggle-settings")
    page.fill("#temperature", "0.3")
    page.fill("#max-tokens", "400")
    page.fill("#system", "You are terse.")
    page.fill("#stop-strings", "NEVER\nSTOP HERE")
    page.press("#stop-strings", "Tab")
    page.click("#close-settings")
    sent = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/v1/chat/completions") else None)
    page.evaluate("""() => { window.__lengths = []; new MutationObserver(() => {
        const a = document.querySelector('.msg.assistant:last-child .answer-text');
        if (a) window.__lengths.push(a.textContent.length); }).observe(document.getElementById('messages'),
        {subtree: true, childList: true, characterData: true}); }""")
    ask(page, "Say something")
    page.wait_for_selector("#stop:visible")
    wait_done(page)
    answer = page.text_content(".msg.assistant:last-child .answer-text")
    assert answer == s.text
    lengths = page.evaluate("window.__lengths")
    assert len(set(lengths)) >= 10 and 0 < min(x for x in lengths if x) < len(s.text), "the reply did not stream"
    body = sent[0]
    assert body["model"] == "tiny" and body["stream"] is True and body["temperature"] == 0.3
    assert body["max_tokens"] == 400 and body["stop"] == ["NEVER", "STOP HERE"]
    assert body["messages"] == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say something"}]
    assert cls(page) < 0.01, page.evaluate("window.__shifts")
    page.screenshot(path=str(shots / "plain-chat.png"))
    page.click(".msg.assistant:last-child .copy")
    assert page.evaluate("navigator.clipboard.readText()") == s.text
    # the conversation is kept: a second turn sends the history, a reload shows it, a new chat is empty
    s.text = "Second answer."
    ask(page, "And again")
    wait_done(page)
    assert [m["role"] for m in sent[-1]["messages"]] == ["system", "user", "assistant", "user"]
    assert sent[-1]["messages"][2]["content"] == answer
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.text_content(".msg.assistant:last-child .answer-text") == "Second answer."
    assert page.locator(".msg.user").count() == 2 and page.input_value("#temperature") == "0.3"
    assert page.text_content("#conversations [aria-current=true]") == "Say something"
    page.click("#new-chat")
    assert page.locator(".msg").count() == 0 and page.locator("#conversations li").count() == 2
    page.click("#conversations li:nth-child(2) .conv-open")
    assert page.locator(".msg.user").count() == 2
    assert not page.errors and not page.evaluate("window.__errors")
    page.context.close()


@needs_browser
def test_stop_aborts_the_request_on_the_server(scripted, browser, shots):
    s = scripted.script
    s.text, s.delay = "never ending " * 400, 0.02
    page = open_page(browser, scripted.url, key=KEY)
    before = metrics(scripted.url).get('havoc:request_success_total{finished_reason="abort",model_name="tiny"}', 0)
    ask(page, "Go on and on")
    page.wait_for_function("() => (document.querySelector('.msg.assistant:last-child .answer-text') || {}).textContent?.length > 40")
    assert page.is_visible("#stop") and not page.is_visible("#send")
    page.click("#stop")
    page.wait_for_selector(".msg.assistant:last-child .badge.warn")  # "stopped"
    kept = page.text_content(".msg.assistant:last-child .answer-text")
    assert 40 < len(kept) < len(s.text) and s.text.startswith(kept)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = metrics(scripted.url)
        if m['havoc:num_requests_running{model_name="tiny"}'] == 0 and \
                m.get('havoc:request_success_total{finished_reason="abort",model_name="tiny"}', 0) > before:
            break
        time.sleep(0.1)
    assert m['havoc:num_requests_running{model_name="tiny"}'] == 0
    assert m['havoc:request_success_total{finished_reason="abort",model_name="tiny"}'] == before + 1
    assert m['havoc:kv_cache_blocks{model_name="tiny",state="used"}'] == 0
    time.sleep(0.3)
    assert page.text_content(".msg.assistant:last-child .answer-text") == kept  # nothing more arrives
    assert page.is_visible("#send") and page.text_content("#status") == "Stopped."
    page.screenshot(path=str(shots / "stopped.png"))
    page.context.close()


@needs_browser
def test_prime_shows_route_steps_cards_charts_debate_and_checklist(served, browser, shots):
    page = open_page(browser, served.url)
    use_prime(page)
    page.evaluate("""() => { window.__order = []; new MutationObserver((records) => {
        for (const r of records) for (const n of r.addedNodes) if (n.nodeType === 1 && n.matches('.route, .step, .card, .debate, .verify, .answer'))
          window.__order.push(n.className.split(' ')[0]); }).observe(document.getElementById('messages'), {subtree: true, childList: true}); }""")
    ask(page, CHART)
    wait_done(page)
    msg = page.locator(".msg.prime").last
    order = page.evaluate("window.__order")
    assert order[0] == "route" and order.index("step") < order.index("card") < order.index("verify") < order.index("answer")
    assert msg.locator(".route .budget").text_content() == "LIGHT"
    assert "control_chart" in msg.locator(".route .reasons").text_content()
    step = msg.locator("details.step").first
    assert step.locator("summary").text_content() == "Step s1 · identify the data and what is asked"
    assert step.evaluate("d => d.open")
    step.locator("summary").click()
    assert not step.evaluate("d => d.open")  # collapsible
    card = msg.locator(".card").first
    assert card.locator(".tool-name").text_content() == "dsl_executor · control_chart"
    badge = card.locator(".badge").text_content()
    assert badge in ("written by the model", "written by the model (second try)", "recovered from the prompt")
    args = json.loads(card.locator("pre.args").text_content())
    assert args["data"] == [10.1, 9.8, 10.4, 10, 12.9, 10.2, 9.9, 10.1]
    assert "UCL 13.24" in card.locator(".result-summary").text_content()
    img = card.locator("figure.picture img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    assert img.evaluate("i => [i.naturalWidth, i.naturalHeight, i.src.startsWith('blob:')]") == [1000, 640, True]
    assert "Control chart" in img.get_attribute("alt")
    checks = msg.locator(".verify .checklist li")
    assert checks.count() == 3
    names = [checks.nth(i).locator("strong").text_content() for i in range(3)]
    assert names == ["json_valid", "args_match_prompt", "answer_traceable"]
    assert msg.locator(".verify li.pass").count() >= 2
    answer = msg.locator(".answer .answer-text").text_content()
    assert answer.startswith("individuals chart: center 10.43, UCL 13.24")
    assert cls(page) < 0.01, page.evaluate("window.__shifts")
    card.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "prime-chart.png"))
    # MEDIUM: assumption checks and the debate in three labelled columns; the residual plots
    ask(page, REGRESSION)
    wait_done(page)
    msg = page.locator(".msg.prime").last
    assert msg.locator(".route .budget").text_content() == "MEDIUM"
    cols = msg.locator(".debate .col h4")
    assert [cols.nth(i).text_content() for i in range(cols.count())] == ["Advocate", "Attack", "Pragmatist"]
    assert msg.locator(".debate .advocate .debate-text").text_content().startswith("The result holds because")
    assert msg.locator(".card").count() >= 2  # the fit, then a normality check
    img = msg.locator(".card").first.locator("img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    assert "Regression residual plots" in img.get_attribute("alt")
    assert cls(page) < 0.01, page.evaluate("window.__shifts")
    for card in msg.locator(".card").all():  # each try labelled by its writer, PRIME's recovery last
        who = [w.text_content() for w in card.locator(".who-wrote").all()]
        assert who  # the model tried first
        by_prime = int(card.locator(".badge").text_content() == "recovered from the prompt")
        tries = [f"model, try {k + 1}" for k in range(len(who) - by_prime)]
        assert who == tries + ["PRIME, from the prompt"] * by_prime
    page.screenshot(path=str(shots / "prime-debate.png"), full_page=True)
    # the reply is drawn again the same from localStorage
    html_before = msg.evaluate("m => m.textContent")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    msg = page.locator(".msg.prime").last
    assert msg.evaluate("m => m.textContent") == html_before
    page.wait_for_function("() => [...document.querySelectorAll('.msg.prime img')].every(i => i.complete && i.naturalWidth > 0)")
    assert not page.errors and not page.evaluate("window.__errors")
    page.context.close()


@needs_browser
def test_phone_width_is_usable_and_accessible(served, browser, shots):
    page = open_page(browser, served.url, width=390, height=844)
    assert page.is_visible("#toggle-sidebar") and not page.is_visible("#new-chat")  # conversations in a drawer
    use_prime(page)
    ask(page, REGRESSION)
    wait_done(page)
    assert no_horizontal_overflow(page)
    cols = page.locator(".msg.prime .debate .col")
    boxes = [cols.nth(i).bounding_box() for i in range(3)]
    assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"]  # stacked, not squeezed
    assert all(b["width"] <= 390 for b in boxes)
    page.locator(".msg.prime .card").first.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "phone-prime.png"))
    page.click("#toggle-sidebar")
    page.wait_for_selector("#new-chat:visible")
    assert page.get_attribute("#toggle-sidebar", "aria-expanded") == "true"
    page.keyboard.press("Escape")
    page.wait_for_selector("#new-chat", state="hidden")
    page.click("#toggle-settings")
    page.wait_for_selector("#temperature:visible")
    page.screenshot(path=str(shots / "phone-settings.png"))
    # every control has a name a screen reader can say; every picture has a text alternative
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')].filter((e) => {
        const label = e.id && document.querySelector(`label[for="${e.id}"]`);
        return !(label || e.getAttribute('aria-label') || e.textContent.trim()); }).map((e) => e.outerHTML.slice(0, 80))""")
    assert unnamed == []
    assert page.evaluate("[...document.querySelectorAll('img')].every(i => i.alt.trim().length > 0)")
    assert page.evaluate("['header', 'nav', 'main', 'aside'].every(t => document.querySelector(t))")
    page.context.close()


@needs_browser
def test_model_text_is_shown_as_text_never_run(scripted, browser, shots):
    payload = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold?</b>'
    s = scripted.script
    s.text, s.delay = f"Here it is: {payload} done.", 0.0
    page = open_page(browser, scripted.url, key=KEY)
    ask(page, "Write some HTML")
    wait_done(page)
    msg = page.locator(".msg.assistant").last
    assert msg.locator(".answer-text").text_content() == s.text  # the characters, as written
    assert msg.locator("script, img, b").count() == 0
    # PRIME: a definition request that names a script goes into the tool call PRIME writes and its arguments
    # (no digits in it: a question with numbers is not read as a definition)
    use_prime(page)
    ask(page, "What is <script>window.__pwned = true</script>?")
    wait_done(page)
    msg = page.locator(".msg.prime").last
    assert "<script>window.__pwned = true</script>" in msg.locator(".card pre.args").text_content()
    assert "<script>window.__pwned = true</script>" in page.locator(".msg.user").last.text_content()
    assert page.locator(".msg script, .msg b, .msg img:not(.plot)").count() == 0
    assert page.evaluate("window.__pwned") is None
    page.screenshot(path=str(shots / "script-as-text.png"))
    page.context.close()


# ------------------------------------------------------------------------------------------ SmolLM2
@pytest.mark.model
@needs_browser
def test_smollm2_in_the_browser(smol_server, browser, shots):
    page = open_page(browser, smol_server.url, width=1100, height=2000)
    page.click("#toggle-settings")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "24")
    page.press("#max-tokens", "Tab")
    page.click("#close-settings")
    ask(page, "What is the capital of France?")
    wait_done(page)
    assert "Paris" in page.text_content(".msg.assistant:last-child .answer-text")
    page.click("#new-chat")
    use_prime(page)
    page.click("#toggle-settings")
    page.fill("#max-tokens", "160")
    page.press("#max-tokens", "Tab")
    page.click("#close-settings")
    ask(page, CHART)
    wait_done(page)
    msg = page.locator(".msg.prime").last
    assert msg.locator(".route .budget").text_content() == "LIGHT"
    assert "UCL 13.24" in msg.locator(".answer .answer-text").text_content()
    assert msg.locator(".verify h3").text_content() == "Verification passed"
    img = msg.locator(".card img").first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    assert cls(page) < 0.01, page.evaluate("window.__shifts")
    page.locator(".msg.user").last.evaluate("m => m.scrollIntoView()")  # the question, then PRIME's work
    page.screenshot(path=str(shots / "smollm2-prime-chart.png"))
    page.context.close()
