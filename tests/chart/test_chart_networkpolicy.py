"""CockroachDB locked down: the NetworkPolicy admits exactly the pods that must connect,
every container has resources, the Manager has probes, the image can be pinned by digest.

Selectors are evaluated here as Kubernetes evaluates them (matchLabels and matchExpressions,
podSelector/namespaceSelector peers) against the pod templates the chart renders, so a label
dropped from a pod or added to a selector shows up as a pod let in or locked out.
"""

from __future__ import annotations

import re

import pytest

from .conftest import MANAGER_IMAGE, HelmError, find, render, render_error

NAMESPACE = "apps"  # conftest renders into this namespace
STORAGE = (
    "global.S3.Endpoint=https://s3.example.com",
    "global.S3.Bucket=acme-enclave-manager-backups",
    "global.S3.HmacSecretName=enclave-manager-backup-credentials",
)
# Every pod the chart can render: Manager, CockroachDB, backup, restore hook, verify CronJob,
# and both helm test pods.
EVERYTHING = MANAGER_IMAGE + STORAGE + (
    "enclaveos-chart.Backup.CronSchedule=0 0 * * *",
    "enclaveos-chart.Verify.CronSchedule=0 3 * * 0",
    "enclaveos-chart.Verify.HelmTest=true",
    "enclaveos-chart.restore.fromObject=latest",
)
POLICY = "r1-enclaveos-cockroachdb"
SQL_CLIENTS = {"r1-enclaveos-manager", "r1-enclaveos-backup", "r1-enclaveos-restore",
               "r1-enclaveos-verify", "r1-enclaveos-test-verify"}
DB_PODS = {"r1-enclaveos-cockroachdb"}


# --- label selector semantics (k8s.io/apimachinery/pkg/labels) ---------------------------

def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector against a label set; {} matches everything."""
    assert selector is not None, "a null selector matches nothing and is not what the chart means"
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.get("matchExpressions") or []:
        key, op, values = req["key"], req["operator"], req.get("values") or []
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise AssertionError(f"unknown operator {op}")
        if not ok:
            return False
    return True


def namespace_labels(name: str) -> dict:
    # Every namespace carries this label (Kubernetes 1.22+).
    return {"kubernetes.io/metadata.name": name}


def peer_admits(peer: dict, pod: dict) -> bool:
    """A NetworkPolicyPeer of a policy in NAMESPACE against a pod {namespace, labels}."""
    if "ipBlock" in peer:
        return False  # addresses, not pods
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], namespace_labels(pod["namespace"])):
            return False
    elif pod["namespace"] != NAMESPACE:
        return False  # a podSelector alone means the policy's own namespace
    return selector_matches(peer.get("podSelector", {}), pod["labels"])


def rules_for(policy: dict, port: int) -> list[dict]:
    """The ingress rules that open `port` (a rule without ports opens all of them)."""
    rules = []
    for rule in policy["spec"].get("ingress") or []:
        ports = rule.get("ports")
        if not ports or any(p.get("port") == port for p in ports):
            rules.append(rule)
    return rules


def admitted(policy: dict, port: int, pod: dict) -> bool:
    for rule in rules_for(policy, port):
        peers = rule.get("from")
        if not peers or any(peer_admits(p, pod) for p in peers):
            return True
    return False


# --- the rendered pods ------------------------------------------------------------------

def pod_template(obj: dict) -> dict | None:
    kind = obj["kind"]
    if kind == "Pod":
        return obj
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    if kind in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
        return obj["spec"]["template"]
    return None


def pods(objs: list[dict]) -> dict[str, dict]:
    """Owner name -> {namespace, labels, spec} of every pod the objects make."""
    out = {}
    for obj in objs:
        tpl = pod_template(obj)
        if tpl is not None:
            out[obj["metadata"]["name"]] = {"namespace": NAMESPACE, "labels": tpl["metadata"].get("labels", {}),
                                            "spec": tpl["spec"]}
    return out


def generic_labels(component: str, release: str = "r1") -> dict:
    """The chart's common labels on a pod that is not one of its SQL clients."""
    return {"helm.sh/chart": "enclaveos-chart-0.1.0", "app.kubernetes.io/name": "enclaveos-chart",
            "app.kubernetes.io/instance": release, "app.kubernetes.io/version": "0.1.0",
            "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/part-of": "data-shield",
            "app.kubernetes.io/component": component}


def policy_of(objs: list[dict]) -> dict:
    return find(objs, "NetworkPolicy", POLICY)


# --- tests -------------------------------------------------------------------------------

def test_everything_renders_each_pod_the_policy_is_about(helm):
    names = set(pods(render(helm, *EVERYTHING)))
    assert names == SQL_CLIENTS | DB_PODS | {"r1-enclaveos-test-storage"}


def test_policy_is_on_by_default_and_selects_exactly_the_cockroachdb_pods(helm):
    objs = render(helm, *EVERYTHING)
    policy = policy_of(objs)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    selected = {name for name, pod in pods(objs).items() if selector_matches(policy["spec"]["podSelector"], pod["labels"])}
    assert selected == DB_PODS
    # The StatefulSet's own selector picks the same pods the policy does.
    sts = find(objs, "StatefulSet", "r1-enclaveos-cockroachdb")
    assert selector_matches(sts["spec"]["selector"], pods(objs)["r1-enclaveos-cockroachdb"]["labels"])
    # Not a pod of the same chart under another release.
    assert not selector_matches(policy["spec"]["podSelector"], generic_labels("cockroachdb", release="r2"))


def test_sql_port_admits_exactly_the_pods_that_must_connect(helm):
    objs = render(helm, *EVERYTHING)
    policy = policy_of(objs)
    rendered = pods(objs)
    let_in = {name for name, pod in rendered.items() if admitted(policy, 26257, pod)}
    assert let_in == SQL_CLIENTS | DB_PODS
    # The storage check only talks to the bucket: it stays out.
    assert not admitted(policy, 26257, rendered["r1-enclaveos-test-storage"])
    for label in SQL_CLIENTS:
        assert rendered[label]["labels"]["enclaveos-chart/sql-client"] == "true"


@pytest.mark.parametrize("pod", [
    pytest.param({"namespace": NAMESPACE, "labels": generic_labels("manager") | {"app.kubernetes.io/component": "job"}},
                 id="the chart's generic labels only"),
    pytest.param({"namespace": NAMESPACE, "labels": {"enclaveos-chart/sql-client": "true"}},
                 id="the sql-client label without the release's labels"),
    pytest.param({"namespace": NAMESPACE, "labels": generic_labels("manager", release="r2") | {"enclaveos-chart/sql-client": "true"}},
                 id="a SQL client of another release"),
    pytest.param({"namespace": "other", "labels": generic_labels("manager") | {"enclaveos-chart/sql-client": "true"}},
                 id="a Manager's labels in another namespace"),
    pytest.param({"namespace": "other", "labels": generic_labels("cockroachdb")},
                 id="a CockroachDB pod's labels in another namespace"),
    pytest.param({"namespace": NAMESPACE, "labels": {}}, id="an unlabelled pod"),
])
def test_sql_port_keeps_out_other_pods(helm, pod):
    policy = policy_of(render(helm, *EVERYTHING))
    assert not admitted(policy, 26257, pod)


def test_db_console_is_closed_to_every_pod_by_default(helm):
    objs = render(helm, *EVERYTHING)
    policy = policy_of(objs)
    assert rules_for(policy, 8080) == []
    for name, pod in pods(objs).items():
        assert not admitted(policy, 8080, pod), name
    # The only port any rule opens is the SQL port.
    assert {p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]} == {26257}


def test_console_from_opens_8080_to_just_those_peers(helm):
    objs = render(helm, *MANAGER_IMAGE,
                  "enclaveos-chart.cockroachdb.networkPolicy.consoleFrom[0].namespaceSelector.matchLabels.team=dba",
                  "enclaveos-chart.cockroachdb.networkPolicy.consoleFrom[0].podSelector.matchLabels.app=console-proxy")
    policy = policy_of(objs)
    proxy = {"namespace": "ops", "labels": {"app": "console-proxy"}}
    console_rules = rules_for(policy, 8080)
    assert [[p["port"] for p in r["ports"]] for r in console_rules] == [[8080]]
    ops_ns = {"kubernetes.io/metadata.name": "ops", "team": "dba"}
    peer = console_rules[0]["from"][0]
    assert selector_matches(peer["namespaceSelector"], ops_ns)
    assert selector_matches(peer["podSelector"], proxy["labels"])
    # The console peer gets no SQL; the Manager gets no console.
    assert not any(selector_matches(p.get("podSelector", {}), proxy["labels"]) and "namespaceSelector" in p
                   for r in rules_for(policy, 26257) for p in r["from"])
    assert not admitted(policy, 8080, pods(objs)["r1-enclaveos-manager"])


def test_sql_from_adds_peers_with_match_expressions(helm):
    objs = render(helm, *MANAGER_IMAGE,
                  "enclaveos-chart.cockroachdb.networkPolicy.sqlFrom[0].podSelector.matchExpressions[0].key=app",
                  "enclaveos-chart.cockroachdb.networkPolicy.sqlFrom[0].podSelector.matchExpressions[0].operator=In",
                  "enclaveos-chart.cockroachdb.networkPolicy.sqlFrom[0].podSelector.matchExpressions[0].values[0]=migrate",
                  "enclaveos-chart.cockroachdb.networkPolicy.sqlFrom[0].podSelector.matchExpressions[0].values[1]=report")
    policy = policy_of(objs)
    assert admitted(policy, 26257, {"namespace": NAMESPACE, "labels": {"app": "migrate"}})
    assert admitted(policy, 26257, {"namespace": NAMESPACE, "labels": {"app": "report"}})
    assert not admitted(policy, 26257, {"namespace": NAMESPACE, "labels": {"app": "shell"}})
    assert not admitted(policy, 26257, {"namespace": "other", "labels": {"app": "migrate"}})
    assert not admitted(policy, 8080, {"namespace": NAMESPACE, "labels": {"app": "migrate"}})
    assert admitted(policy, 26257, pods(objs)["r1-enclaveos-manager"])


def test_selector_semantics_of_this_file():
    # The matcher itself, on the cases the policy relies on.
    assert selector_matches({}, {"a": "1"})
    assert selector_matches({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"})
    assert not selector_matches({"matchLabels": {"a": "1"}}, {"a": "2"})
    assert selector_matches({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {})
    assert not selector_matches({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {})
    assert selector_matches({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": "1"})
    assert not peer_admits({"podSelector": {}}, {"namespace": "other", "labels": {}})
    assert peer_admits({"namespaceSelector": {}, "podSelector": {}}, {"namespace": "other", "labels": {}})


def test_policy_can_be_turned_off_and_is_absent_without_the_chart_database(helm):
    off = render(helm, *MANAGER_IMAGE, "enclaveos-chart.cockroachdb.networkPolicy.enabled=false")
    assert [o for o in off if o["kind"] == "NetworkPolicy"] == []
    external = render(helm, *MANAGER_IMAGE, "enclaveos-chart.cockroachdb.enabled=false",
                      "enclaveos-chart.externalDatabase.host=db.example.com")
    assert [o for o in external if o["kind"] == "NetworkPolicy"] == []


@pytest.mark.parametrize("bad", [
    "enclaveos-chart.cockroachdb.networkPolicy.bogus=1",
    "enclaveos-chart.cockroachdb.networkPolicy.sqlFrom[0].podSelecter.matchLabels.app=x",
    "enclaveos-chart.cockroachdb.networkPolicy.consoleFrom[0].podSelector.matchExpressions[0].operator=Equals",
    "enclaveos-chart.cockroachdb.networkPolicy.enabled=maybe",
])
def test_schema_rejects_malformed_policy_values(helm, bad):
    key = bad.split("=")[0].split(".")[-1].split("[")[0]
    err = render_error(helm, *MANAGER_IMAGE, bad)
    assert key in err or "networkPolicy" in err


# --- resources, probes, image -----------------------------------------------------------

def test_every_container_and_init_container_has_resources(helm):
    for name, pod in pods(render(helm, *EVERYTHING)).items():
        for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
            res = c.get("resources") or {}
            assert res.get("requests", {}).get("cpu"), (name, c["name"])
            assert res.get("requests", {}).get("memory"), (name, c["name"])
            assert res.get("limits", {}).get("memory"), (name, c["name"])


def test_init_container_resources_are_configurable(helm):
    objs = render(helm, *MANAGER_IMAGE, "enclaveos-chart.cockroachdb.initContainer.resources.limits.memory=256Mi")
    init = find(objs, "StatefulSet")["spec"]["template"]["spec"]["initContainers"][0]
    assert init["name"] == "workdir" and init["resources"]["limits"]["memory"] == "256Mi"


def manager_container(objs):
    return find(objs, "Deployment", "r1-enclaveos-manager")["spec"]["template"]["spec"]["containers"][0]


def test_manager_without_a_port_gets_no_guessed_probes(helm):
    c = manager_container(render(helm, *MANAGER_IMAGE))
    assert "ports" not in c and "livenessProbe" not in c and "readinessProbe" not in c


def test_manager_port_gets_tcp_liveness_and_readiness_probes(helm):
    c = manager_container(render(helm, *MANAGER_IMAGE, "enclaveos-chart.Manager.Port=8443"))
    assert c["ports"] == [{"name": "http", "containerPort": 8443}]
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["tcpSocket"] == {"port": "http"}
    assert c["livenessProbe"]["initialDelaySeconds"] >= c["readinessProbe"].get("initialDelaySeconds", 0)


def test_manager_probes_are_replaced_whole_by_the_values(helm):
    c = manager_container(render(helm, *MANAGER_IMAGE, "enclaveos-chart.Manager.Port=8443",
                                 "enclaveos-chart.Manager.LivenessProbe.httpGet.path=/healthz",
                                 "enclaveos-chart.Manager.LivenessProbe.httpGet.port=http",
                                 "enclaveos-chart.Manager.ReadinessProbe.exec.command[0]=/bin/ready"))
    assert c["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": "http"}}
    assert c["readinessProbe"] == {"exec": {"command": ["/bin/ready"]}}


def cockroach_images(objs):
    spec = find(objs, "StatefulSet")["spec"]["template"]["spec"]
    return {c["image"] for c in spec["initContainers"] + spec["containers"]}


def test_cockroachdb_image_is_a_24_1_patch_release(helm):
    (image,) = cockroach_images(render(helm, *MANAGER_IMAGE))
    assert re.fullmatch(r"docker\.io/cockroachdb/cockroach:v24\.1\.(\d+)", image)
    assert int(image.rsplit(".", 1)[1]) > 0, "v24.1.0 is the series' first release, not a patch"


def test_cockroachdb_digest_pins_the_image_and_keeps_the_tag(helm):
    digest = "sha256:" + "ab" * 32
    images = cockroach_images(render(helm, *MANAGER_IMAGE, f"enclaveos-chart.cockroachdb.image.digest={digest}"))
    (image,) = images
    assert re.fullmatch(rf"docker\.io/cockroachdb/cockroach:v24\.1\.\d+@{digest}", image)


def test_cockroachdb_digest_must_be_a_sha256(helm):
    with pytest.raises(HelmError) as err:
        render(helm, *MANAGER_IMAGE, "enclaveos-chart.cockroachdb.image.digest=latest")
    assert "digest" in err.value.stderr
