// SMART referral-review page (App Launch 2.x, EHR launch, public client with PKCE), launched
// from a referral card's smart link. Three ways in:
// - `iss` and `launch` (an EHR launch): authorize at the EHR with the vendored fhirclient;
// - `code` and `state` (the EHR's redirect back): finish the authorization; the token response
//   carries the card's `appContext` (CDS Hooks 2.0, SMART links);
// - `appContext` in the URL, for EHRs that pass it that way.
// The appContext then fetches the stored card, sent in a header so no server log holds it.
"use strict";

const SCOPE = "launch patient/Patient.rs";

async function start() {
  const params = new URLSearchParams(window.location.search);
  if (params.has("appContext")) {
    const iss = params.get("iss");
    $("launch").textContent = iss ? `Launched by ${iss}` : "Opened with the card's appContext";
    return showCard(params.get("appContext"));
  }
  if (params.has("code") || params.has("error")) return finishLaunch();
  if (params.has("iss") && params.has("launch")) return beginLaunch(params.get("iss"), params.get("launch"));
  say("No card to show: open this page from a referral card's link in the EHR.");
}

async function beginLaunch(iss, launch) {
  const config = await (await fetch("/review/config")).json();
  if (!config.clientId) {
    return say("This page is not registered as a SMART app here (no CDS_SMART_CLIENT_ID): ask the service's administrator.");
  }
  if (!config.issuers.includes(iss)) {
    return say(`This page is not configured for the EHR at ${iss}: it accepts launches only from ${config.issuers.join(", ") || "no EHR yet"} (CDS_SMART_ISSUERS).`);
  }
  $("launch").textContent = `Authorizing with ${iss}…`;
  await FHIR.oauth2.authorize({
    clientId: config.clientId,
    scope: SCOPE,
    iss,
    launch,
    redirectUri: window.location.pathname,
    pkceMode: "required",
  });
}

async function finishLaunch() {
  let client;
  try {
    client = await FHIR.oauth2.ready();
  } catch (error) {
    return say(authorizationFailure(error));
  }
  const token = client.state.tokenResponse || {};
  $("launch").textContent = `Launched by ${client.state.serverUrl}`;
  if (token.patient) await showPatient(client, token.patient);
  if (!token.appContext) {
    return say("The EHR's token response carries no appContext, so this page cannot tell which card to show. The EHR must pass the card link's appContext through the launch.");
  }
  return showCard(token.appContext);
}

function authorizationFailure(error) {
  const message = String(error && error.message || error);
  if (/state/i.test(message)) {
    return "The authorization response does not belong to a launch made in this browser (its state is unknown): launch the review again from the card.";
  }
  if (error && error.status) {
    return `The EHR's authorization server refused the authorization code (HTTP ${error.status}): it may have expired or been used already. Launch the review again from the card. (${message})`;
  }
  return `The authorization did not complete: ${message}`;
}

async function showPatient(client, id) {
  // The banner from the launch's patient: read with the launch's token; its id if unreadable.
  let shown = `Patient ${id}`;
  try {
    const patient = await client.patient.read();
    const name = (patient.name || [])[0] || {};
    const text = name.text || [...(name.given || []), name.family].filter(Boolean).join(" ");
    shown = `Patient ${text || id}${patient.birthDate ? `, born ${patient.birthDate}` : ""}`;
  } catch (error) {
    shown += " (the EHR did not return the patient's record)";
  }
  $("patient").textContent = shown;
}

async function showCard(appContext) {
  const response = await fetch("/review/card", {headers: {"X-Card-Capability": appContext}});
  if (!response.ok) return say(`This card is not available (HTTP ${response.status}).`);
  $("cards").append(renderCard(await response.json()));
  for (const details of document.querySelectorAll("#cards details")) details.open = true;
}

function say(text) {
  $("status").textContent = text;
}

start().catch((error) => say(String(error)));
