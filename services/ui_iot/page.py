"""The page: an HTML shell and one script that signs in and reads the API.

Sign-in is the OAuth 2.0 authorization code flow with PKCE (RFC 7636, S256) against the realm's
public client: the script sends the browser to Keycloak's authorization endpoint with a
code_challenge, gets the code back in the URL fragment (never sent to this server, so never in
an access log), exchanges it with the code_verifier at the token endpoint, and keeps the access
token in a variable only: no localStorage, no cookie, so a reload signs in again (silently, while
Keycloak's own session lasts). Only the verifier and the state outlive the redirect, in
sessionStorage, and are removed as soon as the code is exchanged. The page carries no data; the
script asks the API with the token and writes the answers with textContent (no HTML injection).
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlsplit

from services.ui_iot.auth import AuthSettings


def render_page(auth: AuthSettings) -> str:
    settings = (
        f'data-auth="on" data-authorization-endpoint="{escape(auth.authorization_endpoint)}" '
        f'data-token-endpoint="{escape(auth.token_endpoint)}" '
        f'data-client-id="{escape(auth.client_id)}"'
        if auth.enabled else 'data-auth="off"')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>iot-platform</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}</style>
<script src="/app.js" defer></script></head>
<body {settings}><h1>iot-platform</h1>
<p id="status">loading…</p>
<h2>Devices</h2>
<table><thead><tr><th>device</th><th>status</th><th>last seen</th></tr></thead>
<tbody id="devices"></tbody></table>
<h2>Recent alerts</h2>
<table><thead><tr><th>when</th><th>rule</th><th>device</th><th>observed</th></tr></thead>
<tbody id="alerts"></tbody></table></body></html>"""


def page_headers(auth: AuthSettings) -> dict[str, str]:
    """A strict Content-Security-Policy: the page's own script only, API calls to this origin
    and token exchanges to Keycloak's."""
    connect = "'self'"
    if auth.enabled:
        issuer = urlsplit(auth.issuer)
        connect += f" {issuer.scheme}://{issuer.netloc}"
    policy = ("default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
              f"connect-src {connect}; img-src 'self'; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'none'")
    return {"Content-Security-Policy": policy, "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


PAGE_SCRIPT = r""""use strict";
(() => {
  const settings = document.body.dataset;
  const redirectUri = location.origin + location.pathname;
  const pending = "iot-sign-in";  // sessionStorage key of {verifier, state} across the redirect
  let accessToken = null;  // memory only

  const status = (text) => { document.getElementById("status").textContent = text; };
  const base64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const randomString = () => base64url(crypto.getRandomValues(new Uint8Array(32)));

  async function signIn() {
    const verifier = randomString();
    const state = randomString();
    const challenge = base64url(
      await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    sessionStorage.setItem(pending, JSON.stringify({verifier, state}));
    const query = new URLSearchParams({
      client_id: settings.clientId, response_type: "code", response_mode: "fragment",
      scope: "openid", redirect_uri: redirectUri, state,
      code_challenge: challenge, code_challenge_method: "S256"});
    location.assign(`${settings.authorizationEndpoint}?${query}`);
  }

  async function finishSignIn(answer) {
    const started = JSON.parse(sessionStorage.getItem(pending) || "null");
    sessionStorage.removeItem(pending);
    history.replaceState(null, "", redirectUri);  // the code leaves the address bar at once
    if (!started || answer.get("state") !== started.state) {
      throw new Error("sign-in answer does not match this page's request");
    }
    if (answer.get("error")) {
      throw new Error(`sign-in refused: ${answer.get("error")}`);
    }
    const response = await fetch(settings.tokenEndpoint, {
      method: "POST",
      headers: {"Content-Type": "application/x-www-form-urlencoded"},
      body: new URLSearchParams({
        grant_type: "authorization_code", client_id: settings.clientId,
        code: answer.get("code"), redirect_uri: redirectUri,
        code_verifier: started.verifier})});
    if (!response.ok) {
      throw new Error(`token exchange failed: HTTP ${response.status}`);
    }
    accessToken = (await response.json()).access_token;
  }

  async function api(path) {
    const headers = accessToken ? {Authorization: `Bearer ${accessToken}`} : {};
    const response = await fetch(path, {headers});
    if (response.status === 401 && settings.auth === "on") {
      accessToken = null;
      await signIn();  // expired: Keycloak's session signs in again without a form
      return null;
    }
    if (response.status === 403) {
      return {denied: (await response.json()).detail};
    }
    if (!response.ok) {
      throw new Error(`${path}: HTTP ${response.status}`);
    }
    return {rows: await response.json()};
  }

  function fill(id, answer, columns) {
    const body = document.getElementById(id);
    body.replaceChildren();
    const rows = answer.denied ? [[answer.denied]] : answer.rows.map(
      (row) => columns.map((column) => String(row[column])));
    for (const cells of rows) {
      const tr = body.insertRow();
      for (const cell of cells) {
        tr.insertCell().textContent = cell;
      }
    }
  }

  async function main() {
    const answer = new URLSearchParams(location.hash.slice(1));
    if (settings.auth === "on") {
      if (answer.has("state")) {
        await finishSignIn(answer);
      }
      if (!accessToken) {
        await signIn();
        return;
      }
    }
    const [devices, alerts] = await Promise.all([api("/api/devices?limit=200"),
                                                 api("/api/alerts?limit=50")]);
    if (!devices || !alerts) {
      return;
    }
    fill("devices", devices, ["device_id", "status", "last_seen"]);
    fill("alerts", alerts, ["created_at", "rule", "device_id", "observed"]);
    status(settings.auth === "on" ? "signed in" : "sign-in disabled");
  }

  main().catch((error) => status(`error: ${error.message}`));
})();
"""
