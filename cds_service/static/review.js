// SMART referral-review page. A CDS client launches it from a card's smart link with `launch`
// and `iss`; the card's opaque appContext names the card. A full SMART app exchanges `launch`
// for a token at `iss` and receives appContext in the token response; that authorization flow
// needs the EHR, so this page also takes `appContext` from its own URL (the sandbox and demos).
"use strict";

async function start() {
  const params = new URLSearchParams(window.location.search);
  const launch = params.get("launch");
  const iss = params.get("iss");
  const appContext = params.get("appContext");
  $("launch").textContent = launch && iss ? `Launched by ${iss} (launch ${launch})` : "Opened without a SMART launch";
  if (!appContext) {
    $("status").textContent = "No card to show: the launch carried no appContext.";
    return;
  }
  // The appContext is a capability: sent in a header, so no server log holds it.
  const response = await fetch("/review/card", {headers: {"X-Card-Capability": appContext}});
  if (!response.ok) {
    $("status").textContent = `This card is not available (HTTP ${response.status}).`;
    return;
  }
  $("cards").append(renderCard(await response.json()));
  for (const details of document.querySelectorAll("#cards details")) details.open = true;
}

start().catch((error) => { $("status").textContent = String(error); });
