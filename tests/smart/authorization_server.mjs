// The EHR's OAuth 2 authorization server in the SMART launch test (tests/test_smart_launch.py):
// oauth2-mock-server (authorize with PKCE S256 checked, token, JWKS), shaped per launch the way
// an EHR's server is. Usage: node authorization_server.mjs PORT LAUNCHES.json
// LAUNCHES.json maps a `launch` value to what the EHR knows about it, read on every request:
//   {"<launch>": {"token": {...members added to the token response, e.g. appContext...},
//                 "state": "<a state to send back instead of the app's>",
//                 "expired": true}}
import { readFileSync } from "node:fs";
import { OAuth2Server } from "oauth2-mock-server";

const [port, launchesFile] = process.argv.slice(2);
const launchOf = new Map(); // authorization code -> launch

function launchContext(launch) {
  const launches = JSON.parse(readFileSync(launchesFile, "utf8"));
  return launches[launch] ?? {};
}

const server = new OAuth2Server();
await server.issuer.keys.generate("RS256");

server.service.on("beforeAuthorizeRedirect", (redirect, req) => {
  const launch = String(req.query.launch ?? "");
  const method = req.query.code_challenge_method ?? null;
  console.log(JSON.stringify({ authorize: launch, code_challenge_method: method }));
  launchOf.set(redirect.url.searchParams.get("code"), launch);
  const context = launchContext(launch);
  if (context.state) redirect.url.searchParams.set("state", context.state);
});

server.service.on("beforeResponse", (response, req) => {
  const code = req.body.code;
  const launch = launchOf.get(code);
  launchOf.delete(code);
  const context = launch === undefined ? { expired: true } : launchContext(launch);
  if (context.expired) {
    response.statusCode = 400;
    response.body = { error: "invalid_grant", error_description: "the authorization code has expired" };
    return;
  }
  Object.assign(response.body, context.token ?? {});
});

await server.start(Number(port), "127.0.0.1");
console.log(`listening on ${server.issuer.url}`);
