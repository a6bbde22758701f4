"""Images: one helper (iot.image in _images.tpl) builds every container's reference from
`global.imageRegistry`, the component's `image.registry/repository/tag/digest/pullPolicy` and, for
the Python services, `services.image`; `global.imagePullSecrets` reaches every pod spec."""

from __future__ import annotations

import pytest
from iot_tools import helm
from iot_tools.kube import KUBE_VERSIONS

DIGEST = "sha256:" + "0123456789abcdef" * 4
SERVICES = ("ingest", "evaluator", "ui-iot", "ops-worker", "route-delivery")

DEFAULT_IMAGES = {
    **{name: "ghcr.io/iot-platform/iot-services:0.1.0" for name in SERVICES},
    "keycloak": "quay.io/keycloak/keycloak:26.7.3",
    "emqx": "docker.io/library/emqx:5.8.8",
    "nats": "docker.io/library/nats:2.14.5-alpine",
    "postgresql": "docker.io/library/postgres:18.1-alpine",
}

# A private mirror with pull secrets, digests on one third-party image and on the services.
MIRROR = (
    "global.imageRegistry=registry.corp.example:5000/mirror",
    "global.imagePullSecrets={regcred,mirror-pull}",
    f"nats.image.digest={DIGEST}",
    f"services.image.digest={DIGEST}",
    "services.image.pullPolicy=Always",
)


def containers(workload: dict) -> list[dict]:
    spec = helm.pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def images(docs: list[dict]) -> dict[tuple[str, str], dict]:
    """{(component, container name): container} over every workload, init containers too."""
    return {
        (workload["metadata"]["labels"]["app.kubernetes.io/component"], container["name"]):
            container
        for workload in helm.workloads(docs) for container in containers(workload)
    }


@pytest.fixture(scope="module")
def mirror_docs(render) -> list[dict]:
    return render(*MIRROR)


def test_default_images_name_their_registry(default_renders):
    found = {component: container["image"]
             for (component, _), container in images(default_renders[3]).items()}
    assert found == DEFAULT_IMAGES


def test_default_pods_have_no_pull_secrets(default_renders):
    assert [helm.pod_spec(w).get("imagePullSecrets") for w in helm.workloads(default_renders[3])
            if "imagePullSecrets" in helm.pod_spec(w)] == []


def test_global_registry_replaces_every_registry_including_init_containers(mirror_docs):
    found = images(mirror_docs)
    assert ("ingest", "migrate") in found
    for key, container in found.items():
        assert container["image"].startswith("registry.corp.example:5000/mirror/"), key


def test_global_registry_keeps_repository_and_tag(render):
    found = images(render("global.imageRegistry=mirror.example"))
    assert found[("keycloak", "keycloak")]["image"] == "mirror.example/keycloak/keycloak:26.7.3"
    assert found[("emqx", "emqx")]["image"] == "mirror.example/library/emqx:5.8.8"


def test_pull_secrets_on_every_pod_spec(mirror_docs):
    workloads = helm.workloads(mirror_docs)
    assert len(workloads) == 9
    for workload in workloads:
        assert helm.pod_spec(workload)["imagePullSecrets"] == [
            {"name": "regcred"}, {"name": "mirror-pull"}], workload["metadata"]["name"]


def test_digest_wins_over_tag(mirror_docs):
    nats = images(mirror_docs)[("nats", "nats")]
    assert nats["image"] == f"registry.corp.example:5000/mirror/library/nats@{DIGEST}"


def test_digest_keeps_the_tag_as_version_label(mirror_docs):
    nats = helm.by_kind_and_name(mirror_docs)[("StatefulSet", "iot-nats")]
    assert nats["metadata"]["labels"]["app.kubernetes.io/version"] == "2.14.5-alpine"


def test_services_digest_reaches_every_service_and_its_migrate_container(mirror_docs):
    found = images(mirror_docs)
    for component in SERVICES:
        for name in (component, "migrate"):
            assert found[(component, name)]["image"] == (
                f"registry.corp.example:5000/mirror/iot-platform/iot-services@{DIGEST}")


def test_services_pull_policy_reaches_every_service_container(mirror_docs):
    found = images(mirror_docs)
    assert {found[(c, n)]["imagePullPolicy"] for c in SERVICES for n in (c, "migrate")} == {
        "Always"}


def test_component_registry_without_global(render):
    found = images(render("keycloak.image.registry=quay.example", "uiIot.image.registry=r.example"))
    assert found[("keycloak", "keycloak")]["image"] == "quay.example/keycloak/keycloak:26.7.3"
    assert found[("ui-iot", "ui-iot")]["image"] == "r.example/iot-platform/iot-services:0.1.0"
    assert found[("ingest", "ingest")]["image"] == "ghcr.io/iot-platform/iot-services:0.1.0"


def test_empty_registry_leaves_the_repository_alone(render):
    found = images(render("postgresql.image.registry=", "postgresql.image.repository=postgres"))
    assert found[("postgresql", "postgresql")]["image"] == "postgres:18.1-alpine"


def test_service_with_its_own_repository_ignores_the_services_digest(render):
    found = images(render(f"services.image.digest={DIGEST}",
                          "ingest.image.repository=team/ingest-fork", "ingest.image.tag=1.2.3"))
    assert found[("ingest", "ingest")]["image"] == "ghcr.io/team/ingest-fork:1.2.3"
    assert found[("ingest", "migrate")]["image"] == "ghcr.io/team/ingest-fork:1.2.3"
    assert found[("evaluator", "evaluator")]["image"].endswith(f"@{DIGEST}")


def test_service_digest_and_pull_policy_override(render):
    found = images(render(f"routeDelivery.image.digest={DIGEST}",
                          "routeDelivery.image.pullPolicy=Never"))
    container = found[("route-delivery", "route-delivery")]
    assert container["image"] == f"ghcr.io/iot-platform/iot-services@{DIGEST}"
    assert container["imagePullPolicy"] == "Never"
    assert found[("ingest", "ingest")]["imagePullPolicy"] == "IfNotPresent"


def test_third_party_pull_policy_override(render):
    assert images(render("emqx.image.pullPolicy=Always"))[("emqx", "emqx")][
        "imagePullPolicy"] == "Always"


def test_one_helper_builds_every_image_reference():
    """No template formats an image itself: only _images.tpl writes `image:`."""
    offenders = [path.name for path in (helm.CHART_DIR / "templates").rglob("*")
                 if path.is_file() and path.name != "_images.tpl"
                 and any(line.strip().startswith("image:")
                         for line in path.read_text().splitlines())]
    assert offenders == []


def test_third_party_image_without_tag_or_digest_fails_naming_both():
    result = helm.template(set_values=("keycloak.image.tag=",))
    assert result.returncode != 0
    assert "keycloak.image.tag and keycloak.image.digest are both empty" in result.stderr


BAD_VALUES = {
    "digest-not-sha256": ([f"nats.image.digest={DIGEST[:-1]}"], "/nats/image/digest"),
    "digest-without-algorithm": (["emqx.image.digest=" + "0" * 64], "/emqx/image/digest"),
    "service-digest-uppercase": ([f"ingest.image.digest={DIGEST.upper()}"],
                                 "/ingest/image/digest"),
    "registry-with-scheme": (["global.imageRegistry=https://mirror.example"],
                             "/global/imageRegistry"),
    "registry-uppercase": (["keycloak.image.registry=Quay.io"], "/keycloak/image/registry"),
    "repository-with-tag": (["postgresql.image.repository=library/postgres:18"],
                            "/postgresql/image/repository"),
    "tag-with-colon": (["uiIot.image.tag=a:b"], "/uiIot/image/tag"),
    "pull-policy-unknown": (["services.image.pullPolicy=Sometimes"],
                            "/services/image/pullPolicy"),
    "pull-secret-not-a-name": (["global.imagePullSecrets={Reg_Cred}"],
                               "/global/imagePullSecrets/0"),
    "pull-secrets-not-a-list": (["global.imagePullSecrets=regcred"], "/global/imagePullSecrets"),
    "typo-in-global": (["global.imageRegistery=mirror.example"], "'imageRegistery' not allowed"),
    "typo-in-image": (["nats.image.digets=x"], "'digets' not allowed"),
}


@pytest.mark.parametrize("major", [3, 4])
@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_image_values_fail_naming_the_field(case, major):
    set_values, expected = BAD_VALUES[case]
    result = helm.template(major=major, set_values=tuple(set_values))
    assert result.returncode != 0, f"{case} rendered"
    assert expected in result.stderr, result.stderr


def test_mirror_render_is_identical_under_helm_3_and_4(fixed_secrets):
    values = (*fixed_secrets, *MIRROR)
    three, four = (helm.template(major=major, set_values=values) for major in (3, 4))
    assert three.returncode == 0, three.stderr
    assert three.stdout == four.stdout


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_mirror_render_validates_strictly(mirror_docs, kube_validate, version):
    assert [error for doc in mirror_docs for error in kube_validate(doc, version)] == []
