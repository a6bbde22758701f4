"""ui_iot settings, from the environment (see README: Services)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import DatabaseSettings, Env, RuntimeSettings

JWKS_VARIABLE = "AUTH_JWKS_URL"


@dataclass(frozen=True)
class AuthSettings:
    """Bearer-token checks of the API and the page's sign-in (README: Sign-in (Keycloak)).
    AUTH_ENABLED defaults to true: the other AUTH_* settings are then required or defaulted."""

    enabled: bool
    issuer: str = ""
    audience: str = ""
    jwks_url: str = ""
    client_id: str = ""
    leeway: float = 30.0
    jwks_min_refresh: float = 10.0
    jwks_refresh: float = 300.0
    jwks_timeout: float = 3.0

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/auth"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @classmethod
    def from_env(cls, env: Env) -> AuthSettings:
        if not env.flag("AUTH_ENABLED", True):
            return cls(enabled=False)
        issuer = env.url("AUTH_ISSUER_URL", ("https", "http")).rstrip("/")
        return cls(
            enabled=True,
            issuer=issuer,
            audience=env.text("AUTH_AUDIENCE"),
            jwks_url=_jwks_url(env, issuer),
            client_id=env.text("AUTH_CLIENT_ID", "iot-ui"),
            leeway=env.seconds("AUTH_LEEWAY_SECONDS", 30.0, minimum=0, maximum=300),
            jwks_min_refresh=env.seconds("AUTH_JWKS_MIN_REFRESH_SECONDS", 10.0, minimum=0.1,
                                         maximum=3600),
            jwks_refresh=env.seconds("AUTH_JWKS_REFRESH_SECONDS", 300.0, minimum=1,
                                     maximum=86400),
            jwks_timeout=env.seconds("AUTH_JWKS_TIMEOUT_SECONDS", 3.0, minimum=0.1, maximum=60),
        )


def _jwks_url(env: Env, issuer: str) -> str:
    """AUTH_JWKS_URL (checked like a URL), else the issuer's own certs endpoint."""
    given = env.optional("AUTH_JWKS_URL")
    if given is None:
        return f"{issuer}/protocol/openid-connect/certs"
    return Env({JWKS_VARIABLE: given}).url(JWKS_VARIABLE, ("https", "http"))


@dataclass(frozen=True)
class UiConfig:
    runtime: RuntimeSettings
    database: DatabaseSettings
    query_timeout: float
    pool_size: int
    auth: AuthSettings

    @classmethod
    def from_env(cls, env: Env) -> UiConfig:
        return cls(
            runtime=RuntimeSettings.from_env(env),
            database=DatabaseSettings.from_env(env),
            query_timeout=env.seconds("QUERY_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=120),
            pool_size=env.integer("DB_POOL_SIZE", 5, minimum=1, maximum=100),
            auth=AuthSettings.from_env(env),
        )
