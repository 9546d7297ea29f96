// Playground: streams a chat answer over POST /v1/chat/completions (SSE), the same surface any app uses.

import { get, headersFor, errorMessage } from "../api.js";
import { h, field, statusLine } from "../dom.js";

export default async function render(view) {
  view.append(h("h1", null, "Playground"),
    h("p", { class: "lead" }, "Ask any model you may use. The answer streams over ", h("code", null, "/v1/chat/completions"),
      " and is metered like any request."));
  let models = [];
  const status = statusLine();
  try {
    const r = await get("/v1/models");
    models = (r.data || []).map((m) => m.id);
  } catch (e) {
    status.fail(`The model list could not be loaded: ${e.message}`);
  }
  // A list to pick from, and any other id the gateway routes (e.g. demo-slow) may be typed.
  const model = h("input", { type: "text", name: "model", list: "model-list", value: models[0] || "", autocomplete: "off",
    spellcheck: "false" });
  const modelList = h("datalist", { id: "model-list" }, models.map((m) => h("option", { value: m })));
  const system = h("textarea", { name: "system", rows: 2, placeholder: "optional" });
  const prompt = h("textarea", { name: "prompt", rows: 4, required: true, placeholder: "Say hello in three languages." });
  const maxTokens = h("input", { type: "number", name: "max_tokens", min: 1, max: 32000, value: 256, inputmode: "numeric" });
  const send = h("button", { type: "submit" }, "Send");
  const stop = h("button", { type: "button", class: "secondary", disabled: true }, "Stop");
  const answer = h("output", { class: "answer", id: "answer", "aria-live": "polite", for: prompt.id });
  const meta = h("p", { class: "hint", id: "answer-meta" });
  const form = h("form", { class: "playground", novalidate: true }, field("Model", model, "Pick from the list or type any model id."), modelList, field("System prompt", system),
    field("Message", prompt), field("Max tokens", maxTokens), h("div", { class: "row" }, send, stop), status);
  view.append(h("div", { class: "split" }, h("section", { class: "card" }, form),
    h("section", { class: "card" }, h("h2", null, "Answer"), answer, meta)));
  if (!models.length && !status.textContent) status.fail("No model is available to you. Ask an administrator to configure a provider.");

  let controller = null;
  stop.addEventListener("click", () => controller && controller.abort());
  prompt.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit(); });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!prompt.value.trim()) { status.fail("Type a message first."); return; }
    if (!model.value.trim()) { status.fail("Choose a model."); return; }
    status.clear();
    answer.textContent = "";
    meta.textContent = "";
    send.disabled = true; stop.disabled = false;
    controller = new AbortController();
    const messages = [];
    if (system.value.trim()) messages.push({ role: "system", content: system.value });
    messages.push({ role: "user", content: prompt.value });
    const t0 = performance.now();
    let first = 0, usage = null, finish = "";
    try {
      const res = await fetch("/v1/chat/completions", {
        method: "POST", credentials: "same-origin", signal: controller.signal,
        headers: { ...headersFor("POST"), "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({ model: model.value.trim(), messages, stream: true, max_tokens: Number(maxTokens.value) || 256,
          stream_options: { include_usage: true } }),
      });
      if (!res.ok) {
        let body = null;
        try { body = await res.json(); } catch { /* not JSON */ }
        throw new Error(errorMessage(res.status, body));
      }
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const event = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") continue;
            const chunk = JSON.parse(data);
            if (chunk.error) throw new Error(chunk.error.message || "The stream failed.");
            const c = chunk.choices && chunk.choices[0];
            if (c && c.delta && c.delta.content) {
              if (!first) first = performance.now();
              answer.append(c.delta.content);
            }
            if (c && c.finish_reason) finish = c.finish_reason;
            if (chunk.usage) usage = chunk.usage;
          }
        }
      }
      const parts = [`first token after ${Math.round((first || performance.now()) - t0)} ms`,
        `done in ${Math.round(performance.now() - t0)} ms`];
      if (usage) parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
      if (finish) parts.push(`finish: ${finish}`);
      meta.textContent = parts.join(" · ");
    } catch (err) {
      if (err.name === "AbortError") meta.textContent = "Stopped.";
      else status.fail(err.message || String(err));
    } finally {
      send.disabled = false; stop.disabled = true; controller = null;
    }
  });
  return () => controller && controller.abort();
}
