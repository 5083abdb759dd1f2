// Card rendering shared by the playground and the referral-review page. No build step.
"use strict";

const $ = (id) => document.getElementById(id);

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

// The small Markdown subset the cards use: paragraphs, "- " lists, **bold**, _italic_, `code`,
// and backslash escapes (record text arrives with its punctuation escaped: shown as text).
function markdown(text) {
  const escaped = /\\([!-\/:-@\[-`{-~])/g;
  const inline = (line) => escapeHtml(line.replace(escaped, (_, c) => `\u0000${c.charCodeAt(0)}\u0000`))
    .replace(/\*\*(.+?)\*\*/g, "<strong>$1</strong>")
    .replace(/`(.+?)`/g, "<code>$1</code>")
    .replace(/(^|\s)_(.+?)_(?=\s|$|[.,;:])/g, "$1<em>$2</em>")
    .replace(/\u0000(\d+)\u0000/g, "&#$1;");
  const html = [];
  let list = false;
  for (const line of text.split("\n")) {
    if (line.startsWith("- ")) {
      if (!list) { html.push("<ul>"); list = true; }
      html.push(`<li>${inline(line.slice(2))}</li>`);
      continue;
    }
    if (list) { html.push("</ul>"); list = false; }
    if (line.trim()) html.push(`<p>${inline(line)}</p>`);
  }
  if (list) html.push("</ul>");
  return html.join("");
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function describeRequest(resource) {
  const code = resource.code?.coding?.[0]?.display ?? "ServiceRequest";
  const performer = resource.performerType?.coding?.[0];
  const reasons = (resource.reasonReference ?? []).map((r) => r.reference).join(", ");
  return `${code} · ${performer ? `${performer.display} (NUCC ${performer.code})` : ""} · priority ${resource.priority}` +
    (reasons ? ` · because of ${reasons}` : "");
}

function renderSuggestion(suggestion) {
  const box = element("div", "suggestion" + (suggestion.isRecommended ? " recommended" : ""));
  box.append(element("div", "label", suggestion.label));
  for (const action of suggestion.actions) {
    if (action.type === "delete") {
      box.append(element("p", "service-request", `Remove ${action.resourceId}`));
    } else {
      box.append(element("p", "service-request", describeRequest(action.resource)));
      const json = element("details");
      json.append(element("summary", "", `Draft ${action.resource.resourceType}`));
      json.append(element("pre", "", JSON.stringify(action.resource, null, 2)));
      box.append(json);
    }
  }
  return box;
}

function renderCard(card) {
  const node = element("article", `card ${card.indicator}`);
  node.append(element("div", "indicator", card.indicator));
  node.append(element("h3", "summary", card.summary));
  const detail = element("div", "detail");
  detail.innerHTML = markdown(card.detail ?? "");
  node.append(detail);
  for (const suggestion of card.suggestions ?? []) node.append(renderSuggestion(suggestion));
  const source = element("p", "source", "Source: ");
  const link = element("a", "", card.source.label);
  if (card.source.url) { link.href = card.source.url; link.target = "_blank"; link.rel = "noopener"; }
  source.append(link);
  node.append(source);
  return node;
}

