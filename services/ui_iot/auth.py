"""Bearer tokens of the realm: settings, the signing keys (JWKS) and the per-request check.

Library: PyJWT (`pyjwt[crypto]`, pinned in pyproject.toml). Its decode() needs the allowed
algorithms spelled out on every call (there is no "take the alg from the header" mode, so `none`
and an HS256 token signed with a public key as the secret cannot slip through), it checks exp,
nbf, iat, iss and aud with a leeway, and PyJWK turns a JWKS entry into a key; its crypto is
`cryptography`. It has been maintained for a decade with a small API surface. The JWKS is fetched
here with aiohttp (not PyJWKClient, which blocks on urllib), so a slow Keycloak never blocks the
event loop.

Keys are cached in memory. An unknown `kid` (key rotation) triggers one refetch, at most once
per AUTH_JWKS_MIN_REFRESH_SECONDS, so a flood of tokens with made-up kids costs Keycloak one
request per interval. A failed fetch keeps the keys already cached: Keycloak being down does
not stop tokens signed by known keys from validating. Nothing here touches readiness.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import jwt
from prometheus_client import Counter

from services.common.faults import REMOTE_PEER_FAILURES
from services.common.health import HealthState
from services.ui_iot.config import AuthSettings

log = logging.getLogger("ui_iot.auth")

# Asymmetric only: Keycloak signs with RS256 by default, ES256 when an EC key is made active.
ALLOWED_ALGORITHMS = ("RS256", "ES256")
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")

# The realm roles (chart: keycloak realm) each API endpoint needs.
DEVICES_READ = "iot-devices-read"
TELEMETRY_READ = "iot-telemetry-read"
ALERTS_READ = "iot-alerts-read"


class JwksFetchError(Exception):
    pass


class SigningKeys:
    """The realm's public keys by kid, fetched from the JWKS URL and kept across failures."""

    def __init__(self, settings: AuthSettings, health: HealthState) -> None:
        self._settings = settings
        self._health = health
        self._keys: dict[str, jwt.PyJWK] = {}
        # Only fetches an unknown kid asks for are rate-limited: the schedule is not a flood.
        self._last_on_demand: float | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._fetches: Counter = health.metrics.counter(
            "iot_ui_jwks_fetches", "Fetches of the realm's signing keys, by outcome and reason.",
            ["outcome", "reason"])
        health.declare_counters("jwks_fetch_failures")

    @property
    def known_kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    async def run(self) -> None:
        """Fetch at start (so the first request needs no round trip), then every
        AUTH_JWKS_REFRESH_SECONDS; retries sooner while no key is known."""
        while True:
            await self.refresh("scheduled")
            wait = self._settings.jwks_refresh if self._keys else self._settings.jwks_min_refresh
            await asyncio.sleep(wait)

    async def key_for(self, kid: str) -> jwt.PyJWK | None:
        key = self._keys.get(kid)
        if key is not None:
            return key
        # Unknown kid: the realm may have rotated its keys. One refetch, rate-limited.
        await self.refresh("unknown_kid")
        return self._keys.get(kid)

    async def refresh(self, reason: str) -> None:
        async with self._lock:
            if reason == "unknown_kid":
                now = time.monotonic()
                if (self._last_on_demand is not None
                        and now - self._last_on_demand < self._settings.jwks_min_refresh):
                    self._fetches.labels("skipped", reason).inc()
                    return
                self._last_on_demand = now
            try:
                keys = await self._fetch()
            except JwksFetchError as error:
                self._fetches.labels("failed", reason).inc()
                self._health.count("jwks_fetch_failures")
                log.warning("signing keys: fetch failed (%s); keeping %d cached key(s)",
                            error, len(self._keys))
                return
            added = set(keys) - set(self._keys)
            self._keys = keys
            self._fetches.labels("ok", reason).inc()
            if added:
                log.info("signing keys: %d key(s), new kid(s): %s", len(keys),
                         ", ".join(sorted(added)))

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.jwks_timeout))
        try:
            async with self._session.get(self._settings.jwks_url, allow_redirects=False) as answer:
                if answer.status != 200:
                    raise JwksFetchError(f"HTTP {answer.status}")
                document = await answer.json(content_type=None)
        except REMOTE_PEER_FAILURES as error:
            raise JwksFetchError(type(error).__name__) from None
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document.get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue  # encryption keys are no signing keys
            kid = entry.get("kid")
            algorithm = entry.get("alg")
            if not isinstance(kid, str) or algorithm not in ALLOWED_ALGORITHMS:
                continue
            try:
                keys[kid] = jwt.PyJWK(entry, algorithm)
            except jwt.PyJWTError:
                continue  # one unusable entry does not spoil the others
        if not keys:
            raise JwksFetchError("no usable signing key in the JWKS")
        return keys

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class TokenRejectedError(Exception):
    """The token is missing or invalid (HTTP 401). `reason` is for logs and metrics only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenValidator:
    def __init__(self, settings: AuthSettings, keys: SigningKeys, health: HealthState) -> None:
        self._settings = settings
        self._keys = keys
        self._rejections: Counter = health.metrics.counter(
            "iot_ui_token_rejections", "API requests refused for their token, by reason.",
            ["reason"])

    async def claims(self, authorization: str | None) -> dict[str, Any]:
        try:
            return await self._claims(authorization)
        except TokenRejectedError as rejected:
            self._rejections.labels(rejected.reason).inc()
            raise

    async def _claims(self, authorization: str | None) -> dict[str, Any]:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenRejectedError("missing")
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejectedError("malformed") from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise TokenRejectedError("algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenRejectedError("no_kid")
        key = await self._keys.key_for(kid)
        if key is None:
            raise TokenRejectedError("unknown_kid")
        if key.algorithm_name != algorithm:
            raise TokenRejectedError("algorithm")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[algorithm], audience=self._settings.audience,
                issuer=self._settings.issuer, leeway=self._settings.leeway,
                options={"require": list(REQUIRED_CLAIMS)})
        except jwt.ExpiredSignatureError:
            raise TokenRejectedError("expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejectedError("not_yet_valid") from None
        except jwt.InvalidAudienceError:
            raise TokenRejectedError("audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRejectedError("issuer") from None
        except jwt.InvalidSignatureError:
            raise TokenRejectedError("signature") from None
        except jwt.PyJWTError:
            raise TokenRejectedError("invalid") from None
        # Keycloak marks access tokens typ=Bearer; an ID or refresh token is not a credential.
        if claims.get("typ", "Bearer") != "Bearer":
            raise TokenRejectedError("token_type")
        return claims


def realm_roles(claims: dict[str, Any]) -> frozenset[str]:
    access = claims.get("realm_access")
    roles = access.get("roles") if isinstance(access, dict) else None
    return frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else \
        frozenset()
