// spine-cds playground: send a CDS Hooks request, render the cards (with cards.js).
"use strict";

function showStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function send() {
  const cards = $("cards");
  cards.replaceChildren();
  let body;
  try {
    body = JSON.parse($("body").value);
  } catch (error) {
    showStatus(`The request is not valid JSON: ${error.message}`, true);
    return;
  }
  const response = await fetch(`/cds-services/${$("hook").value}`, {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  $("raw").textContent = JSON.stringify(answer, null, 2);
  if (!response.ok) {
    const issues = (answer.issue ?? []).map((i) => (i.expression ? `${i.expression[0]}: ` : "") + i.diagnostics);
    showStatus(`HTTP ${response.status}: ${issues.join("; ")}`, true);
    return;
  }
  showStatus(`HTTP ${response.status}: ${answer.cards.length} card(s)`, false);
  if (!answer.cards.length) cards.append(element("p", "", "No cards: nothing to say for this patient."));
  for (const card of answer.cards) cards.append(renderCard(card));
}

async function loadExample(name) {
  if (!name) return;
  const request = await (await fetch(`/playground/examples/${encodeURIComponent(name)}`)).json();
  $("body").value = JSON.stringify(request, null, 2);
  $("hook").value = request.hook;
}

async function start() {
  const hooks = await (await fetch("/playground/hooks")).json();
  for (const hook of hooks) $("hook").append(new Option(hook, hook));
  const names = await (await fetch("/playground/examples")).json();
  for (const name of names) $("example").append(new Option(name, name));
  $("example").addEventListener("change", (event) => loadExample(event.target.value));
  $("send").addEventListener("click", () => send().catch((error) => showStatus(String(error), true)));
}

start();
