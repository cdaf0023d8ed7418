// The /docs page: draws openapi.json and lets a reader send each GET request from the browser.
// Self-contained on purpose (no framework, no CDN): it must work on a host without internet.
// Text from the description or from answers is only ever set as textContent, never as HTML.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

// Text with `code` spans, as the descriptions are written: odd segments become <code>.
function rich(text) {
  const out = document.createDocumentFragment();
  String(text || "").split("`").forEach((part, i) => {
    out.append(i % 2 ? el("code", {}, part) : document.createTextNode(part));
  });
  return out;
}

// Resolves local "$ref"s (#/components/...) so schemas can be shown in full.
function resolve(doc, schema, depth = 0) {
  if (depth > 20 || schema === null || typeof schema !== "object") return schema;
  if (Array.isArray(schema)) return schema.map((s) => resolve(doc, s, depth + 1));
  if (typeof schema.$ref === "string" && schema.$ref.startsWith("#/")) {
    const target = schema.$ref.slice(2).split("/").reduce((o, k) => (o ? o[k] : undefined), doc);
    return resolve(doc, target, depth + 1);
  }
  const out = {};
  for (const [key, value] of Object.entries(schema)) out[key] = resolve(doc, value, depth + 1);
  return out;
}

function shellQuote(text) {
  return "'" + text.replace(/'/g, "'\\''") + "'";
}

function parameterRow(param, inputs) {
  const schema = param.schema || {};
  const input = el("input", {
    type: "text",
    name: param.name,
    placeholder: schema.example || schema.format || schema.type || "",
    "aria-label": param.name,
  });
  if (schema.maxLength) input.maxLength = schema.maxLength;
  inputs.push([param, input]);
  return el("tr", {},
    el("td", {}, el("code", {}, param.name), param.required ? el("span", { class: "required" }, " *") : null),
    el("td", {}, input),
    el("td", {}, rich(param.description)));
}

async function send(method, path, inputs, out) {
  const query = new URLSearchParams();
  for (const [param, input] of inputs) {
    if (input.value !== "") query.append(param.name, input.value);
  }
  const qs = query.toString();
  const url = new URL(path.replace(/^\//, "") + (qs ? "?" + qs : ""), document.baseURI);
  out.replaceChildren(el("p", {}, "Sending…"));
  const started = performance.now();
  try {
    const response = await fetch(url, { method, headers: { Accept: "application/json, text/plain;q=0.9, */*;q=0.5" } });
    const text = await response.text();
    const ms = (performance.now() - started).toFixed(1);
    const type = response.headers.get("Content-Type") || "";
    let body = text;
    if (type.startsWith("application/json")) {
      try { body = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* show it as sent */ }
    }
    out.replaceChildren(
      el("p", {}, "curl ", el("code", {}, shellQuote(url.href))),
      el("p", {},
        el("span", { class: "status " + (response.ok ? "ok" : "bad") }, `${response.status} ${response.statusText}`),
        `  ·  ${ms} ms  ·  ${type}`),
      el("pre", {}, body));
  } catch (err) {
    out.replaceChildren(el("p", { class: "status bad" }, "Request failed: " + err));
  }
}

function operation(doc, path, method, op) {
  const inputs = [];
  const out = el("div", { class: "result", "aria-live": "polite" });
  const params = op.parameters || [];
  const button = el("button", { type: "button" }, "Send");
  button.addEventListener("click", () => send(method.toUpperCase(), path, inputs, out));
  const responses = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning"), el("th", {}, "schema")));
  for (const [status, response] of Object.entries(op.responses || {})) {
    const content = response.content || {};
    const schemas = Object.entries(content).map(([type, media]) =>
      el("details", {}, el("summary", {}, type), el("pre", {}, JSON.stringify(resolve(doc, media.schema || {}), null, 2))));
    responses.append(el("tr", {}, el("td", {}, el("code", {}, status)), el("td", {}, rich(response.description)), el("td", {}, ...schemas)));
  }
  const form = el("form", {},
    params.length ? el("table", {}, ...params.map((p) => parameterRow(p, inputs))) : el("p", {}, "No parameters."),
    button);
  form.addEventListener("submit", (event) => { event.preventDefault(); button.click(); });
  return el("details", { class: "op" },
    el("summary", {},
      el("span", { class: "method" }, method.toUpperCase()),
      el("span", { class: "path" }, path),
      el("span", { class: "summary" }, op.summary || "")),
    el("div", { class: "body" },
      el("p", {}, rich(op.description)),
      form,
      out,
      el("h3", {}, "Responses"),
      responses));
}

async function main() {
  const target = document.getElementById("operations");
  try {
    const response = await fetch("openapi.json");
    const doc = await response.json();
    document.getElementById("title").textContent = `${doc.info.title} ${doc.info.version}`;
    document.getElementById("description").replaceChildren(rich(doc.info.description));
    document.title = `${doc.info.title} — HTTP endpoint`;
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        const section = operation(doc, path, method, op);
        section.classList.add("op");
        target.append(section);
      }
    }
    const first = target.querySelector("details.op");
    if (first) first.open = true;
  } catch (err) {
    target.replaceChildren(el("p", { class: "status bad" }, "Cannot load openapi.json: " + err));
  }
}

document.addEventListener("DOMContentLoaded", main);
