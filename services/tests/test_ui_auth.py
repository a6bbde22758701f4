"""ui_iot's sign-in against a real Keycloak running the realm the chart imports (the `keycloak`
fixture: iot_tools.keycloak, realm JSON from `helm template`).

Real tokens come from the chart's public client through the authorization code flow with PKCE
(the login form filled in over HTTP, as a browser would). Tokens that must be wrong in exactly one
way (audience, issuer, expiry, nbf) are signed with an RSA key this test imported into the same
Keycloak (an `rsa` key provider), so ui_iot finds their kid in the realm's real JWKS and the one
wrong claim is what it refuses. The page's own flow runs in the drill's headless Chromium.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from iot_tools.keycloak import HttpError, KeycloakServer
from iot_tools.services import ServiceProcess, wait_until

from .conftest import Database, Launch, service_env

VIEWER = ("iot-viewer",)
ALL_READ = ("iot-devices-read", "iot-telemetry-read", "iot-alerts-read")


@dataclass(frozen=True)
class User:
    name: str
    password: str


@pytest.fixture(scope="session")
def users(keycloak: KeycloakServer) -> dict[str, User]:
    """viewer: the composite iot-viewer; devices: iot-devices-read only; nobody: no role."""
    made = {}
    for name, roles in (("viewer", VIEWER), ("devices", ("iot-devices-read",)),
                        ("nobody", ())):
        user = User(f"{name}-{secrets.token_hex(3)}", secrets.token_urlsafe(12))
        keycloak.create_user(user.name, user.password, roles)
        made[name] = user
    return made


def sign_in(keycloak: KeycloakServer, user: User) -> str:
    return keycloak.sign_in("iot-ui", keycloak.ui_redirect_uri, user.name,
                            user.password).access_token


@dataclass
class Forger:
    """Signs any claims with an RSA key the realm publishes (imported through the admin API)."""

    keycloak: KeycloakServer
    private_pem: bytes
    kid: str

    def claims(self, **changes: object) -> dict:
        now = int(time.time())
        claims = {"iss": self.keycloak.issuer, "aud": ["iot-api", "account"], "sub": "forged",
                  "iat": now, "exp": now + 300, "typ": "Bearer", "azp": "iot-ui",
                  "realm_access": {"roles": list(ALL_READ)}}
        claims.update(changes)
        return {key: value for key, value in claims.items() if value is not None}

    def token(self, kid: str | None = None, **changes: object) -> str:
        return jwt.encode(self.claims(**changes), self.private_pem, algorithm="RS256",
                          headers={"kid": kid or self.kid})


def new_rsa_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


@pytest.fixture(scope="session")
def forger(keycloak: KeycloakServer) -> Forger:
    pem = new_rsa_key()
    return Forger(keycloak, pem, keycloak.add_rsa_key(pem.decode(), "test-forger"))


def auth_env(database: Database, keycloak: KeycloakServer, **extra: str) -> dict[str, str]:
    return service_env(database, None, AUTH_ENABLED="true", AUTH_ISSUER_URL=keycloak.issuer,
                       AUTH_AUDIENCE="iot-api", AUTH_CLIENT_ID="iot-ui",
                       AUTH_JWKS_URL=keycloak.jwks_url, **extra)


def started_with_keys(service: ServiceProcess) -> ServiceProcess:
    """Ready, and its first (scheduled) key fetch done: later fetches are the test's doing."""
    service.wait_ready()
    assert wait_until(lambda: jwks_fetches(service, "scheduled") >= 1, timeout=20) is not None
    return service


@pytest.fixture
def ui(launch: Launch, database: Database, keycloak: KeycloakServer,
       forger: Forger) -> ServiceProcess:
    """ui_iot checking tokens against the `keycloak` fixture; the forger's key is in the realm
    before it starts, so that key is no unknown kid."""
    return started_with_keys(launch("ui_iot", auth_env(database, keycloak)))


def call(service: ServiceProcess, path: str, token: str | None = None,
         ) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(f"http://127.0.0.1:{service.port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def jwks_fetches(service: ServiceProcess, reason: str, outcome: str = "ok") -> float:
    _, _, text = call(service, "/metrics")
    pattern = (rf'^iot_ui_jwks_fetches_total\{{outcome="{outcome}",reason="{reason}"\}} '
               r"([0-9.e+]+)$")
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


API = ("/api/devices", "/api/devices/d1/telemetry", "/api/alerts")


# -- the chart's realm, as Keycloak serves it ------------------------------------------------

def test_the_charts_realm_issues_tokens_with_the_apis_audience_and_the_viewers_roles(
        keycloak: KeycloakServer, users: dict[str, User]) -> None:
    claims = jwt.decode(sign_in(keycloak, users["viewer"]), options={"verify_signature": False})
    assert "iot-api" in claims["aud"] and claims["iss"] == keycloak.issuer
    assert set(ALL_READ) <= set(claims["realm_access"]["roles"])


def test_the_ui_client_refuses_a_sign_in_without_pkce(keycloak: KeycloakServer,
                                                      users: dict[str, User]) -> None:
    with pytest.raises(HttpError) as refused:
        keycloak.sign_in("iot-ui", keycloak.ui_redirect_uri, users["viewer"].name,
                         users["viewer"].password, pkce=False)
    assert "error=invalid_request" in refused.value.body


def test_the_ui_client_refuses_the_password_grant(keycloak: KeycloakServer,
                                                  users: dict[str, User]) -> None:
    form = urllib.parse.urlencode({"grant_type": "password", "client_id": "iot-ui",
                                   "username": users["viewer"].name,
                                   "password": users["viewer"].password}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{keycloak.issuer}/protocol/openid-connect/token", form,
                               timeout=10)
    assert json.loads(refused.value.read())["error"] == "unauthorized_client"


# -- the API -----------------------------------------------------------------------------------

def test_a_signed_in_viewer_reads_devices_telemetry_and_alerts(
        ui: ServiceProcess, keycloak: KeycloakServer, users: dict[str, User]) -> None:
    token = sign_in(keycloak, users["viewer"])
    for path in API:
        status, _, body = call(ui, path, token)
        assert status == 200, (path, body)


@pytest.mark.parametrize("path", API)
def test_no_token_is_401_with_a_bearer_challenge(ui: ServiceProcess, path: str) -> None:
    status, headers, _ = call(ui, path)
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")


def test_a_missing_role_is_403_and_the_granted_one_still_200(
        ui: ServiceProcess, keycloak: KeycloakServer, users: dict[str, User]) -> None:
    token = sign_in(keycloak, users["devices"])
    assert call(ui, "/api/devices", token)[0] == 200
    for path in ("/api/devices/d1/telemetry", "/api/alerts"):
        status, headers, _ = call(ui, path, token)
        assert status == 403, path
        assert 'error="insufficient_scope"' in headers["www-authenticate"]


def test_a_user_without_roles_reads_nothing(ui: ServiceProcess, keycloak: KeycloakServer,
                                            users: dict[str, User]) -> None:
    token = sign_in(keycloak, users["nobody"])
    assert [call(ui, path, token)[0] for path in API] == [403, 403, 403]


def test_a_forged_token_with_every_claim_right_is_accepted(ui: ServiceProcess,
                                                           forger: Forger) -> None:
    """The control of the refusals below: only their one wrong claim makes them fail."""
    assert call(ui, "/api/alerts", forger.token())[0] == 200


def test_an_expiry_within_the_leeway_is_accepted(ui: ServiceProcess, forger: Forger) -> None:
    assert call(ui, "/api/alerts", forger.token(exp=int(time.time()) - 10))[0] == 200


def _none_token(forger: Forger) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": forger.kid}
    parts = [base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=").decode()
             for p in (header, forger.claims())]
    return f"{parts[0]}.{parts[1]}."


def _hs256_with_the_public_key(forger: Forger) -> str:
    """The classic confusion attack: HMAC keyed with the realm's public key."""
    with urllib.request.urlopen(forger.keycloak.jwks_url, timeout=10) as answer:
        (entry,) = [k for k in json.load(answer)["keys"] if k["kid"] == forger.kid]
    public = jwt.PyJWK(entry).key.public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": forger.kid}
    parts = [base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=").decode()
             for p in (header, forger.claims())]
    import hashlib
    import hmac

    signature = hmac.new(public, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    return f"{parts[0]}.{parts[1]}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _tampered(forger: Forger) -> str:
    """A valid token whose payload was changed after signing (roles widened)."""
    header, _payload, signature = forger.token(realm_access={"roles": []}).split(".")
    widened = base64.urlsafe_b64encode(json.dumps(forger.claims()).encode()).rstrip(b"=")
    return f"{header}.{widened.decode()}.{signature}"


WRONG: dict[str, Callable[[Forger], str]] = {
    "wrong-audience": lambda f: f.token(aud="account"),
    "no-audience": lambda f: f.token(aud=None),
    "wrong-issuer": lambda f: f.token(iss=f.keycloak.issuer.replace("/iot", "/master")),
    "expired-beyond-the-leeway": lambda f: f.token(exp=int(time.time()) - 60),
    "not-yet-valid-beyond-the-leeway": lambda f: f.token(nbf=int(time.time()) + 120),
    "no-expiry": lambda f: f.token(exp=None),
    "id-token-type": lambda f: f.token(typ="ID"),
    "tampered-payload": _tampered,
    "signed-by-an-unknown-key": lambda f: jwt.encode(f.claims(), new_rsa_key(),
                                                     algorithm="RS256", headers={"kid": f.kid}),
    "alg-none": _none_token,
    "hs256-keyed-with-the-public-key": _hs256_with_the_public_key,
    "not-a-jwt": lambda f: "not.a.jwt",
}


@pytest.mark.parametrize("case", list(WRONG))
def test_a_token_wrong_in_one_way_is_401(ui: ServiceProcess, forger: Forger, case: str) -> None:
    status, headers, _ = call(ui, "/api/alerts", WRONG[case](forger))
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]


# -- keys: rotation, flood, Keycloak down -----------------------------------------------------

def test_a_rotated_key_is_fetched_once_on_its_unknown_kid_and_then_accepted(
        ui: ServiceProcess, keycloak: KeycloakServer, forger: Forger) -> None:
    assert call(ui, "/api/alerts", forger.token())[0] == 200  # keys cached by now
    assert jwks_fetches(ui, "unknown_kid") == 0
    pem = new_rsa_key()
    new_kid = keycloak.add_rsa_key(pem.decode(), f"rotated-{secrets.token_hex(3)}")
    rotated = jwt.encode(forger.claims(), pem, algorithm="RS256", headers={"kid": new_kid})
    assert call(ui, "/api/alerts", rotated)[0] == 200
    assert call(ui, "/api/devices", rotated)[0] == 200  # from the cache now
    assert jwks_fetches(ui, "unknown_kid") == 1


def test_a_flood_of_unknown_kids_costs_keycloak_at_most_one_fetch(
        launch: Launch, database: Database, keycloak: KeycloakServer, forger: Forger) -> None:
    ui = started_with_keys(
        launch("ui_iot", auth_env(database, keycloak, AUTH_JWKS_MIN_REFRESH_SECONDS="60")))
    assert call(ui, "/api/alerts", forger.token())[0] == 200
    statuses = [call(ui, "/api/alerts", forger.token(kid=f"bogus-{n}"))[0] for n in range(50)]
    assert statuses == [401] * 50
    attempted = jwks_fetches(ui, "unknown_kid") + jwks_fetches(ui, "unknown_kid", "failed")
    assert attempted <= 1
    assert jwks_fetches(ui, "unknown_kid", "skipped") >= 49


def test_with_keycloak_frozen_cached_keys_keep_validating_and_ui_stays_ready(
        ui: ServiceProcess, keycloak: KeycloakServer, forger: Forger,
        users: dict[str, User]) -> None:
    real = sign_in(keycloak, users["viewer"])
    assert call(ui, "/api/alerts", real)[0] == 200
    keycloak.freeze()
    try:
        started = time.monotonic()
        assert call(ui, "/api/alerts", real)[0] == 200
        assert call(ui, "/api/devices", forger.token())[0] == 200
        # An unknown kid now waits for the JWKS fetch to time out (3 s), then is refused.
        assert call(ui, "/api/alerts", forger.token(kid="after-the-outage"))[0] == 401
        for _ in range(10):
            assert ui.status("/ready") == 200
            assert call(ui, "/api/alerts", real)[0] == 200
            time.sleep(0.2)
        assert time.monotonic() - started < 15
        assert jwks_fetches(ui, "unknown_kid", "failed") == 1
        assert '"jwks_fetch_failures": 1' in ui.get("/health").body
    finally:
        keycloak.thaw()
    assert wait_until(keycloak.ready, timeout=30) is not None


def test_ui_iot_becomes_ready_while_keycloak_is_frozen_and_validates_once_it_answers(
        launch: Launch, database: Database, keycloak: KeycloakServer, forger: Forger) -> None:
    """Readiness never waits for Keycloak; the signing keys arrive when it is back."""
    keycloak.freeze()
    try:
        ui = launch("ui_iot", auth_env(database, keycloak, AUTH_JWKS_MIN_REFRESH_SECONDS="1",
                                       AUTH_JWKS_TIMEOUT_SECONDS="1"))
        ui.wait_ready(timeout=30)
        assert call(ui, "/api/alerts", forger.token())[0] == 401  # no key known yet
    finally:
        keycloak.thaw()
    assert wait_until(lambda: call(ui, "/api/alerts", forger.token())[0] == 200,
                      timeout=30) is not None


# -- what stays open, what is gone -------------------------------------------------------------

@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/health?verbose",
                                  "/ready?verbose"])
def test_probes_and_metrics_need_no_token_and_name_no_identity_provider(
        ui: ServiceProcess, keycloak: KeycloakServer, path: str) -> None:
    status, _, body = call(ui, path)
    assert status == 200
    assert str(keycloak.http_port) not in body and "realms/" not in body


def test_the_swagger_ui_is_gone_and_the_openapi_document_needs_a_token(
        ui: ServiceProcess, forger: Forger) -> None:
    assert call(ui, "/api/docs")[0] == 404
    assert call(ui, "/api/openapi.json")[0] == 401
    status, _, body = call(ui, "/api/openapi.json", forger.token(realm_access=None))
    assert status == 200 and "/api/devices" in json.loads(body)["paths"]


def test_the_page_itself_carries_no_data_and_a_strict_content_security_policy(
        ui: ServiceProcess, database: Database, keycloak: KeycloakServer) -> None:
    database.sql("INSERT INTO devices (device_id, status, last_seen) "
                 "VALUES ('secret-device-7', 'online', now())")
    status, headers, body = call(ui, "/")
    assert status == 200 and "secret-device-7" not in body
    assert 'data-auth="on"' in body and 'data-client-id="iot-ui"' in body
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert f"connect-src 'self' http://127.0.0.1:{keycloak.http_port}" in policy


# -- configuration -----------------------------------------------------------------------------

def test_a_missing_issuer_stops_ui_iot_at_start_naming_the_variable(
        launch: Launch, database: Database) -> None:
    env = service_env(database, None)
    del env["AUTH_ENABLED"]  # the code's default: on
    service = launch("ui_iot", {**env, "AUTH_AUDIENCE": "iot-api"})
    assert wait_until(lambda: service.returncode() is not None, timeout=20) is not None
    assert service.returncode() == 2
    assert "AUTH_ISSUER_URL" in service.log_text()


def test_auth_disabled_serves_without_tokens_and_says_so_loudly(
        launch: Launch, database: Database) -> None:
    service = launch("ui_iot", service_env(database, None, AUTH_ENABLED="false"))
    service.wait_ready()
    assert service.status("/api/alerts") == 200
    assert "AUTH_ENABLED=false: THE API ANSWERS ANYONE" in service.log_text()


# -- the page in a real browser ----------------------------------------------------------------

@pytest.fixture
def page_ui(launch: Launch, database: Database, keycloak: KeycloakServer,
            tmp_path) -> Iterator[ServiceProcess]:
    """ui_iot on the port the realm's UI client may redirect to."""
    service = ServiceProcess("ui_iot", auth_env(database, keycloak), tmp_path,
                             port=keycloak.ui_port).start()
    try:
        service.wait_ready()
        yield service
    finally:
        service.kill()


def test_the_page_signs_in_with_pkce_in_a_real_browser_and_keeps_the_token_in_memory(
        page_ui: ServiceProcess, database: Database, keycloak: KeycloakServer,
        users: dict[str, User], tmp_path) -> None:
    from iot_tools.browser import Browser

    database.sql("INSERT INTO devices (device_id, status, last_seen) VALUES "
                 "('browser-device-1', 'online', now()), ('<img src=x>', 'online', now())")
    with Browser(tmp_path / "chromium") as browser:
        browser.navigate(keycloak.ui_redirect_uri)
        assert browser.wait_for("document.getElementById('kc-form-login') !== null", 60), \
            browser.evaluate("location.href")
        login_url = browser.evaluate("location.href")
        browser.evaluate(
            f"document.getElementById('username').value = {json.dumps(users['viewer'].name)};"
            f"document.getElementById('password').value = {json.dumps(users['viewer'].password)};"
            "document.getElementById('kc-form-login').submit(); true")
        assert browser.wait_for(
            "document.getElementById('status') && "
            "document.getElementById('status').textContent === 'signed in'", 60), \
            browser.evaluate("document.body.innerText")
        devices = browser.evaluate("document.getElementById('devices').innerText")
        injected = browser.evaluate("document.querySelector('#devices img') !== null")
        storage = browser.evaluate(
            "JSON.stringify({local: Object.keys(localStorage),"
            " session: Object.keys(sessionStorage), cookie: document.cookie,"
            " href: location.href})")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(login_url).query))
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["client_id"] == "iot-ui" and query["response_mode"] == "fragment"
    assert "browser-device-1" in devices
    assert "<img src=x>" in devices and injected is False  # data written as text
    seen = json.loads(storage)
    assert seen == {"local": [], "session": [], "cookie": "", "href": keycloak.ui_redirect_uri}
