"""Sign-in in the chart: the realm Keycloak imports (ConfigMap + `--import-realm`), the UI's
public PKCE client, the roles, no users or secrets; ui_iot's AUTH_* settings (issuer as browsers
see Keycloak, JWKS from the Service inside the cluster); schema and guards for bad values; Helm 3
== Helm 4. The same realm, taken from this render, is imported into a real Keycloak by
services/tests/test_ui_auth.py."""

from __future__ import annotations

import json

import pytest
from iot_tools import helm
from iot_tools.keycloak import realm_from_docs

MAJORS = (3, 4)
READ_ROLES = {"iot-devices-read", "iot-telemetry-read", "iot-alerts-read"}


def _keycloak(docs: list[dict]) -> dict:
    (workload,) = [w for w in helm.workloads(docs) if w["metadata"]["name"] == "iot-keycloak"]
    return workload


def _ui_env(docs: list[dict]) -> dict[str, str | None]:
    (workload,) = [w for w in helm.workloads(docs) if w["metadata"]["name"] == "iot-ui-iot"]
    env = helm.env_by_name(helm.main_container(workload))
    return {name: entry.get("value") for name, entry in env.items() if name.startswith("AUTH_")}


def _client(realm: dict) -> dict:
    (client,) = realm["clients"]
    return client


def test_the_realm_is_named_by_its_value_and_imported_at_start(default_renders):
    docs = default_renders[3]
    realm = realm_from_docs(docs)
    assert realm["realm"] == "iot" and realm["enabled"] is True
    keycloak = _keycloak(docs)
    container = helm.main_container(keycloak)
    assert container["args"] == ["start", "--import-realm"]
    (mount,) = container["volumeMounts"]
    assert mount == {"name": "realm", "mountPath": "/opt/keycloak/data/import", "readOnly": True}
    (volume,) = helm.pod_spec(keycloak)["volumes"]
    assert volume == {"name": "realm", "configMap": {"name": "iot-keycloak-realm"}}


def test_the_ui_client_is_public_and_uses_only_the_code_flow_with_pkce_s256(default_renders):
    client = _client(realm_from_docs(default_renders[3]))
    assert client["clientId"] == "iot-ui"
    assert client["publicClient"] is True and "secret" not in client
    assert client["standardFlowEnabled"] is True
    assert client["implicitFlowEnabled"] is False
    assert client["directAccessGrantsEnabled"] is False
    assert client["serviceAccountsEnabled"] is False
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"


def test_access_tokens_carry_the_apis_audience(default_renders):
    (mapper,) = _client(realm_from_docs(default_renders[3]))["protocolMappers"]
    assert mapper["protocolMapper"] == "oidc-audience-mapper"
    assert mapper["config"]["included.custom.audience"] == "iot-api"
    assert mapper["config"]["access.token.claim"] == "true"


def test_the_realm_has_a_read_role_per_kind_of_data_and_the_composite_viewer(default_renders):
    roles = {role["name"]: role for role in realm_from_docs(default_renders[3])["roles"]["realm"]}
    assert set(roles) == {*READ_ROLES, "iot-viewer"}
    assert roles["iot-viewer"]["composite"] is True
    assert set(roles["iot-viewer"]["composites"]["realm"]) == READ_ROLES
    assert not any(roles[name].get("composite") for name in READ_ROLES)


def test_the_realm_holds_no_users_and_no_secrets(default_renders):
    (configmap,) = [d for d in default_renders[3]
                    if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "iot-keycloak-realm"]
    text = json.dumps(configmap)
    realm = realm_from_docs(default_renders[3])
    assert "users" not in realm and "credentials" not in text
    assert "secret" not in text.lower()
    assert realm["registrationAllowed"] is False


def test_redirect_uris_follow_the_uis_ingress_and_httproute_hosts(render):
    docs = render("uiIot.ingress.enabled=true", "uiIot.ingress.hosts[0].host=iot.example.com",
                  "uiIot.ingress.hosts[1].host=plain.example.com",
                  "uiIot.ingress.tls[0].secretName=t",
                  "uiIot.ingress.tls[0].hosts[0]=iot.example.com",
                  "uiIot.httpRoute.enabled=true", "uiIot.httpRoute.parentRefs[0].name=gw",
                  "uiIot.httpRoute.hostnames[0]=gw.example.com")
    client = _client(realm_from_docs(docs))
    assert client["redirectUris"] == ["https://iot.example.com/*", "http://plain.example.com/*",
                                      "https://gw.example.com/*"]
    assert client["webOrigins"] == ["+"]


def test_explicit_redirect_uris_and_web_origins_win(render):
    docs = render("uiIot.ingress.enabled=true", "uiIot.ingress.hosts[0].host=iot.example.com",
                  "uiIot.auth.redirectUris[0]=https://ops.example.org/iot/*",
                  "uiIot.auth.webOrigins[0]=https://ops.example.org")
    client = _client(realm_from_docs(docs))
    assert client["redirectUris"] == ["https://ops.example.org/iot/*"]
    assert client["webOrigins"] == ["https://ops.example.org"]


def test_ui_iot_validates_tokens_by_default_with_keys_from_the_keycloak_service(default_renders):
    assert _ui_env(default_renders[3]) == {
        "AUTH_ENABLED": "true",
        "AUTH_ISSUER_URL": "http://iot-keycloak:8080/realms/iot",
        "AUTH_AUDIENCE": "iot-api",
        "AUTH_CLIENT_ID": "iot-ui",
        "AUTH_JWKS_URL": "http://iot-keycloak:8080/realms/iot/protocol/openid-connect/certs",
        "AUTH_LEEWAY_SECONDS": "30",
    }


@pytest.mark.parametrize(("settings", "issuer", "jwks"), [
    (("keycloak.hostname=id.example.com",), "https://id.example.com/realms/iot",
     "http://iot-keycloak:8080/realms/iot/protocol/openid-connect/certs"),
    (("keycloak.hostname=id.example.com", "keycloak.httpRelativePath=/auth",
      "keycloak.realm.name=plant"),
     "https://id.example.com/auth/realms/plant",
     "http://iot-keycloak:8080/auth/realms/plant/protocol/openid-connect/certs"),
    (("keycloak.hostname=https://iot.example.com/auth/", "keycloak.httpRelativePath=/auth"),
     "https://iot.example.com/auth/realms/iot",
     "http://iot-keycloak:8080/auth/realms/iot/protocol/openid-connect/certs"),
    (("uiIot.auth.issuerUrl=https://login.example.net/realms/x/",
      "uiIot.auth.jwksUrl=https://login.example.net/keys"),
     "https://login.example.net/realms/x", "https://login.example.net/keys"),
], ids=["bare-hostname", "relative-path-and-realm", "full-url", "explicit"])
def test_the_issuer_is_keycloaks_public_url_and_keys_come_from_inside(render, settings, issuer,
                                                                      jwks):
    env = _ui_env(render(*settings))
    assert env["AUTH_ISSUER_URL"] == issuer
    assert env["AUTH_JWKS_URL"] == jwks


def test_an_external_identity_provider_needs_its_issuer(render):
    with pytest.raises(helm.HelmRenderError, match=r"uiIot\.auth\.issuerUrl is required"):
        render("keycloak.enabled=false")
    env = _ui_env(render("keycloak.enabled=false",
                         "uiIot.auth.issuerUrl=https://login.example.net/realms/x"))
    assert env["AUTH_ISSUER_URL"] == "https://login.example.net/realms/x"
    assert "AUTH_JWKS_URL" not in env  # ui_iot then asks the issuer's own certs endpoint


def test_without_import_keycloak_starts_plain_and_no_realm_is_rendered(render):
    docs = render("keycloak.realm.import=false")
    assert not [d for d in docs if d["metadata"]["name"] == "iot-keycloak-realm"]
    keycloak = _keycloak(docs)
    assert helm.main_container(keycloak)["args"] == ["start"]
    assert "volumes" not in helm.pod_spec(keycloak)
    assert "checksum/keycloak-realm" not in keycloak["spec"]["template"]["metadata"]["annotations"]


def test_auth_disabled_is_said_in_the_env_and_sets_nothing_else(render):
    assert _ui_env(render("uiIot.auth.enabled=false")) == {"AUTH_ENABLED": "false"}


def test_a_realm_change_rolls_keycloak(render, base_docs):
    before = _keycloak(base_docs)["spec"]["template"]["metadata"]["annotations"]
    after = _keycloak(render("keycloak.realm.accessTokenLifespanSeconds=600"))
    assert (after["spec"]["template"]["metadata"]["annotations"]["checksum/keycloak-realm"]
            != before["checksum/keycloak-realm"])


@pytest.mark.parametrize(("settings", "expected"), [
    (("keycloak.realm.name=bad realm",), "/keycloak/realm/name"),
    (("keycloak.realm.sslRequired=sometimes",), "/keycloak/realm/sslRequired"),
    (("keycloak.realm.accessTokenLifespanSeconds=5",),
     "/keycloak/realm/accessTokenLifespanSeconds"),
    (("keycloak.realm.users[0]=alice",), "'users' not allowed"),
    (("uiIot.auth.leewaySeconds=3600",), "/uiIot/auth/leewaySeconds"),
    (("uiIot.auth.redirectUris[0]=not a url",), "/uiIot/auth/redirectUris/0"),
    (("uiIot.auth.issuerUrl=ftp://id.example.com",), "/uiIot/auth/issuerUrl"),
    (("uiIot.auth.enabled=maybe",), "/uiIot/auth/enabled"),
    (("uiIot.auth.clientSecret=x",), "'clientSecret' not allowed"),
], ids=["realm-name", "ssl-required", "token-lifespan", "users", "leeway", "redirect-uri",
        "issuer-scheme", "enabled", "client-secret"])
@pytest.mark.parametrize("major", MAJORS)
def test_bad_sign_in_values_fail_naming_the_field(settings, expected, major):
    result = helm.template(major=major, set_values=settings)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


def test_helm_3_and_4_render_the_realm_and_the_settings_identically(render):
    settings = ("uiIot.ingress.enabled=true", "uiIot.ingress.hosts[0].host=iot.example.com",
                "keycloak.hostname=id.example.com")
    three, four = render(*settings, major=3), render(*settings, major=4)
    assert realm_from_docs(three) == realm_from_docs(four)
    assert _ui_env(three) == _ui_env(four)
    assert _keycloak(three) == _keycloak(four)
