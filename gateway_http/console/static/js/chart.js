// Inline SVG bar charts, drawn here (no chart library): one by day, one by model.
// Each chart has a <title> and a plain table fallback is rendered beside it by the caller.

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// Vertical bars: points = [{label, value}], fmt(value) -> text.
export function columns(points, { title, fmt = String, height = 180 } = {}) {
  const w = Math.max(320, points.length * 28 + 56), top = 12, left = 48, bottom = 28;
  const max = niceMax(Math.max(0, ...points.map((p) => p.value)));
  const svg = s("svg", { viewBox: `0 0 ${w} ${height}`, class: "chart", role: "img", "aria-label": title });
  svg.append(s("title", {}, title));
  const ih = height - top - bottom, bw = (w - left - 8) / Math.max(points.length, 1);
  for (const f of [0, 0.5, 1]) {
    const y = top + ih - f * ih;
    svg.append(s("line", { x1: left, x2: w - 4, y1: y, y2: y, class: "grid" }));
    svg.append(s("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "axis" }, fmt(max * f)));
  }
  points.forEach((p, i) => {
    const bh = (p.value / max) * ih, x = left + i * bw + bw * 0.15;
    const r = s("rect", { x, y: top + ih - bh, width: bw * 0.7, height: Math.max(bh, p.value > 0 ? 1 : 0), class: "bar" });
    r.append(s("title", {}, `${p.label}: ${fmt(p.value)}`));
    svg.append(r);
    const every = Math.ceil(points.length / 10);
    if (i % every === 0) {
      svg.append(s("text", { x: x + bw * 0.35, y: height - 10, "text-anchor": "middle", class: "axis" }, p.label));
    }
  });
  return svg;
}

// Horizontal bars, one row per item, labelled with its name and value.
export function rows(points, { title, fmt = String } = {}) {
  const rowH = 26, w = 560, left = 170, right = 90;
  const height = Math.max(1, points.length) * rowH + 8;
  const max = Math.max(...points.map((p) => p.value), 0) || 1;
  const svg = s("svg", { viewBox: `0 0 ${w} ${height}`, class: "chart", role: "img", "aria-label": title });
  svg.append(s("title", {}, title));
  points.forEach((p, i) => {
    const y = 4 + i * rowH;
    const name = p.label.length > 24 ? p.label.slice(0, 23) + "…" : p.label;
    svg.append(s("text", { x: left - 8, y: y + 16, "text-anchor": "end", class: "axis" }, name));
    const bw = ((w - left - right) * p.value) / max;
    const r = s("rect", { x: left, y: y + 4, width: Math.max(bw, p.value > 0 ? 1 : 0), height: rowH - 10, class: "bar" });
    r.append(s("title", {}, `${p.label}: ${fmt(p.value)}`));
    svg.append(r);
    svg.append(s("text", { x: left + bw + 6, y: y + 16, class: "axis" }, fmt(p.value)));
  });
  return svg;
}
