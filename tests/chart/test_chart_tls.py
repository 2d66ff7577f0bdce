"""CockroachDB's secure mode: the certificates reach every pod that connects, from the Secret
or the cert-manager Certificates the values name, and nowhere else; insecure stays the default.

Each file is followed from the environment variable (or CockroachDB's --certs-dir) through the
container's mount and the pod's volume to the Secret and key it comes from.
"""

from __future__ import annotations

import fnmatch

import kubernetes_validate
import pytest

from .conftest import MANAGER_IMAGE, UMBRELLA, env_of, find, notes, pod_spec, render, render_error
from .test_chart_kube_schemas import NEWEST, OLDEST

SUB = "enclaveos-chart."
STORAGE = ("global.S3.Endpoint=https://s3.example.com", "global.S3.Bucket=acme-enclave-manager-backups",
           "global.S3.HmacSecretName=enclave-manager-backup-credentials")
EVERY_POD = MANAGER_IMAGE + STORAGE + (
    f"{SUB}Backup.CronSchedule=0 0 * * *", f"{SUB}Verify.CronSchedule=0 3 * * 0",
    f"{SUB}Verify.HelmTest=true", f"{SUB}restore.fromObject=latest")
TLS = f"{SUB}cockroachdb.tls.enabled=true"
FROM_SECRET = (TLS, f"{SUB}cockroachdb.tls.secretName=crdb-certs")
CERT_MANAGER = (TLS, f"{SUB}cockroachdb.tls.certManager.enabled=true")
# The pods that connect to the database, and the one program pod that does not.
CLIENTS = {"backup": ("CronJob", "r1-enclaveos-backup"), "restore": ("Job", "r1-enclaveos-restore"),
           "verify": ("CronJob", "r1-enclaveos-verify"), "test-verify": ("Pod", "r1-enclaveos-test-verify")}
STORAGE_CHECK = ("Pod", "r1-enclaveos-test-storage")
CERTS_DIR = "/cockroach/cockroach-certs"
DB = "r1-enclaveos-cockroachdb"


def source_of(spec: dict, container: dict, path: str) -> dict:
    """The Secret key behind a file path in a container: {secret, key, mode, readOnly}."""
    directory, _, name = path.rpartition("/")
    (mount,) = [m for m in container.get("volumeMounts", []) if m["mountPath"] == directory]
    vol = {v["name"]: v for v in spec["volumes"]}[mount["name"]]
    if "secret" in vol:
        sources, mode = [{"secret": {"name": vol["secret"]["secretName"], "items": vol["secret"]["items"]}}], \
            vol["secret"].get("defaultMode")
    else:
        sources, mode = vol["projected"]["sources"], vol["projected"].get("defaultMode")
    hits = [(s["secret"]["name"], i["key"]) for s in sources for i in s["secret"]["items"] if i["path"] == name]
    assert len(hits) == 1, (path, hits)
    return {"secret": hits[0][0], "key": hits[0][1], "mode": mode, "readOnly": mount.get("readOnly", False)}


def db_pod(objs: list[dict]) -> dict:
    return find(objs, "StatefulSet", DB)["spec"]["template"]["spec"]


def db_container(spec: dict) -> dict:
    return next(c for c in spec["containers"] if c["name"] == "cockroachdb")


def db_files(objs: list[dict]) -> dict[str, tuple[str, str]]:
    """File in CockroachDB's certs dir -> (Secret, key), through the copying init container."""
    spec = db_pod(objs)
    main = db_container(spec)
    assert f"--certs-dir={CERTS_DIR}" in main["command"] and "--insecure" not in main["command"]
    (certs_mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == CERTS_DIR]
    assert certs_mount["readOnly"] is True
    (init,) = [c for c in spec["initContainers"] if certs_mount["name"] in {m["name"] for m in c["volumeMounts"]}]
    # install -m 0400 <sources...> <dir>/: owner-only copies, as CockroachDB demands of keys.
    assert init["command"][:3] == ["install", "-m", "0400"]
    *sources, target = init["command"][3:]
    (out_mount,) = [m for m in init["volumeMounts"] if m["name"] == certs_mount["name"]]
    assert target.rstrip("/") == out_mount["mountPath"]
    assert {v["name"]: v for v in spec["volumes"]}[certs_mount["name"]]["emptyDir"]["medium"] == "Memory"
    out = {}
    for src in sources:
        s = source_of(spec, init, src)
        assert s["readOnly"] and s["mode"] == 0o440
        out[src.rpartition("/")[2]] = (s["secret"], s["key"])
    return out


def client_files(spec: dict, c: dict) -> dict[str, tuple[str, str, int]]:
    env = env_of(c)
    out = {}
    for var in ("PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"):
        if var in env:
            s = source_of(spec, c, env[var]["value"])
            assert s["readOnly"], var
            out[var] = (s["secret"], s["key"], s["mode"])
    return out


# --- insecure, the default ------------------------------------------------------------------

def test_insecure_is_the_default_and_mounts_no_certificates(helm):
    objs = render(helm, *EVERY_POD)
    main = db_container(db_pod(objs))
    assert "--insecure" in main["command"]
    assert not any(a.startswith("--certs-dir") for a in main["command"])
    assert all(p["httpGet"].get("scheme", "HTTP") == "HTTP" for p in (main["readinessProbe"], main["livenessProbe"]))
    for kind, name in CLIENTS.values():
        spec = pod_spec(find(objs, kind, name))
        (c,) = spec["containers"]
        assert env_of(c)["PGSSLMODE"]["value"] == "disable"
        assert client_files(spec, c) == {}
    assert not [o for o in objs if o["apiVersion"].startswith("cert-manager.io/")]


# --- certificates from a Secret -------------------------------------------------------------

def test_secret_certificates_reach_cockroachdb(helm):
    objs = render(helm, *EVERY_POD, *FROM_SECRET)
    assert db_files(objs) == {name: ("crdb-certs", name) for name in
                              ("ca.crt", "node.crt", "node.key", "client.root.crt", "client.root.key")}
    main = db_container(db_pod(objs))
    # `cockroach sql` in the pod (the manual restore) finds root's certificate without flags.
    assert env_of(main)["COCKROACH_CERTS_DIR"]["value"] == CERTS_DIR
    assert main["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert main["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_secret_certificates_reach_every_pod_that_connects_with_verify_full(helm):
    objs = render(helm, *EVERY_POD, *FROM_SECRET)
    for role, (kind, name) in CLIENTS.items():
        spec = pod_spec(find(objs, kind, name))
        (c,) = spec["containers"]
        env = env_of(c)
        assert env["PGSSLMODE"]["value"] == "verify-full", role
        assert env["PGUSER"]["value"] == "root", role
        assert client_files(spec, c) == {
            "PGSSLROOTCERT": ("crdb-certs", "ca.crt", 0o440),
            "PGSSLCERT": ("crdb-certs", "client.root.crt", 0o440),
            "PGSSLKEY": ("crdb-certs", "client.root.key", 0o440),
        }, role
        # The node's private key stays in the database pod.
        items = [i["key"] for v in spec["volumes"] if "secret" in v for i in v["secret"].get("items", [])]
        assert "node.key" not in items, role


def test_pods_that_do_not_connect_get_no_database_key(helm):
    objs = render(helm, *EVERY_POD, *FROM_SECRET)
    for kind, name in (STORAGE_CHECK, ("Deployment", "r1-enclaveos-manager")):
        spec = pod_spec(find(objs, kind, name))
        for v in spec.get("volumes", []):
            assert v.get("secret", {}).get("secretName") != "crdb-certs", name


def test_tls_ci_values_validate_strictly_and_connect_with_verify_full(helm):
    values = UMBRELLA / "ci" / "tls-values.yaml"
    for kube in (OLDEST, NEWEST):
        objs = render(helm, files=[values], extra=("--kube-version", kube))
        for obj in objs:
            kubernetes_validate.validate(obj, kube, strict=True)
    for kind, name in CLIENTS.values():
        (c,) = pod_spec(find(objs, kind, name))["containers"]
        assert env_of(c)["PGSSLMODE"]["value"] == "verify-full"


# --- certificates from cert-manager ---------------------------------------------------------

def certificates(objs):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == "Certificate"}


def test_cert_manager_certificates_reach_cockroachdb_and_every_client(helm):
    objs = render(helm, *EVERY_POD, *CERT_MANAGER)
    certs = certificates(objs)
    node, client = certs[f"{DB}-node"], certs[f"{DB}-client-root"]
    node_secret, client_secret = node["spec"]["secretName"], client["spec"]["secretName"]
    assert db_files(objs) == {
        "ca.crt": (node_secret, "ca.crt"), "node.crt": (node_secret, "tls.crt"), "node.key": (node_secret, "tls.key"),
        "client.root.crt": (client_secret, "tls.crt"), "client.root.key": (client_secret, "tls.key")}
    for role, (kind, name) in CLIENTS.items():
        spec = pod_spec(find(objs, kind, name))
        (c,) = spec["containers"]
        assert env_of(c)["PGSSLMODE"]["value"] == "verify-full", role
        assert client_files(spec, c) == {"PGSSLROOTCERT": (client_secret, "ca.crt", 0o440),
                                         "PGSSLCERT": (client_secret, "tls.crt", 0o440),
                                         "PGSSLKEY": (client_secret, "tls.key", 0o440)}, role


def test_cert_manager_node_certificate_names_what_clients_and_nodes_dial(helm):
    objs = render(helm, *EVERY_POD, *CERT_MANAGER)
    certs = certificates(objs)
    node = certs[f"{DB}-node"]["spec"]
    names = node["dnsNames"]

    def covered(host):
        return any(fnmatch.fnmatchcase(host, n) and host.count(".") == n.count(".") for n in names)

    (c,) = pod_spec(find(objs, "CronJob", "r1-enclaveos-backup"))["containers"]
    assert covered(env_of(c)["PGHOST"]["value"])       # verify-full checks this name
    assert covered(f"{DB}-0.{DB}")                     # --advertise-addr of pod 0
    assert covered(f"{DB}-public.apps.svc.cluster.local") and covered("localhost")
    assert "127.0.0.1" in node["ipAddresses"]
    assert node["commonName"] == "node" and {"server auth", "client auth"} <= set(node["usages"])
    client = certs[f"{DB}-client-root"]["spec"]
    assert client["commonName"] == env_of(c)["PGUSER"]["value"] == "root"
    assert "client auth" in client["usages"] and "server auth" not in client["usages"]


def test_cert_manager_without_an_issuer_makes_a_self_signed_ca(helm):
    objs = render(helm, *MANAGER_IMAGE, *CERT_MANAGER)
    issuers = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Issuer"}
    certs = certificates(objs)
    ca = certs[f"{DB}-ca"]["spec"]
    assert ca["isCA"] is True
    assert issuers[ca["issuerRef"]["name"]]["spec"] == {"selfSigned": {}}
    ca_issuer = issuers[f"{DB}-ca"]["spec"]["ca"]
    assert ca_issuer["secretName"] == ca["secretName"]
    for name in (f"{DB}-node", f"{DB}-client-root"):
        assert certs[name]["spec"]["issuerRef"] == {"name": f"{DB}-ca", "kind": "Issuer", "group": "cert-manager.io"}


def test_cert_manager_with_a_named_issuer_uses_it_and_makes_none(helm):
    objs = render(helm, *MANAGER_IMAGE, *CERT_MANAGER, f"{SUB}cockroachdb.tls.certManager.issuerName=corp-ca",
                  f"{SUB}cockroachdb.tls.certManager.issuerKind=ClusterIssuer",
                  f"{SUB}cockroachdb.tls.certManager.duration=2160h", f"{SUB}cockroachdb.tls.certManager.renewBefore=360h")
    assert not [o for o in objs if o["kind"] in ("Issuer", "ClusterIssuer")]
    certs = certificates(objs)
    assert set(certs) == {f"{DB}-node", f"{DB}-client-root"}
    for cert in certs.values():
        assert cert["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
        assert (cert["spec"]["duration"], cert["spec"]["renewBefore"]) == ("2160h", "360h")


def test_cert_manager_mode_validates_strictly_apart_from_cert_manager_kinds(helm):
    for kube in (OLDEST, NEWEST):
        objs = render(helm, *EVERY_POD, *CERT_MANAGER, extra=("--kube-version", kube))
        for obj in objs:
            if not obj["apiVersion"].startswith("cert-manager.io/"):
                kubernetes_validate.validate(obj, kube, strict=True)


# --- errors, docs ---------------------------------------------------------------------------

@pytest.mark.parametrize("sets, names", [
    ((TLS,), ("cockroachdb.tls.secretName", "cockroachdb.tls.certManager.enabled")),
    ((*FROM_SECRET, f"{SUB}cockroachdb.tls.certManager.enabled=true"),
     ("cockroachdb.tls.secretName", "cockroachdb.tls.certManager.enabled")),
    ((*FROM_SECRET, f"{SUB}cockroachdb.enabled=false", f"{SUB}externalDatabase.host=db.example.com"),
     ("cockroachdb.enabled", "externalDatabase.sslMode")),
])
def test_inconsistent_tls_values_fail_naming_the_values(helm, sets, names):
    err = render_error(helm, *MANAGER_IMAGE, *sets)
    for name in names:
        assert name in err


def test_schema_rejects_unknown_tls_keys_and_bad_durations(helm):
    assert "bogus" in render_error(helm, *MANAGER_IMAGE, f"{SUB}cockroachdb.tls.bogus=1")
    assert "duration" in render_error(helm, *MANAGER_IMAGE, f"{SUB}cockroachdb.tls.certManager.duration=1y")


def test_notes_say_what_insecure_costs_and_warn_without_the_policy():
    insecure = notes(*MANAGER_IMAGE)
    assert "Insecure mode" in insecure and "root" in insecure and "cockroachdb.tls.enabled=true" in insecure
    assert "WARNINGS:" not in insecure
    open_db = notes(*MANAGER_IMAGE, f"{SUB}cockroachdb.networkPolicy.enabled=false")
    assert "WARNINGS:" in open_db and "networkPolicy.enabled=false" in open_db
    secure = notes(*MANAGER_IMAGE, *FROM_SECRET)
    assert "Secure mode: TLS with certificates from Secret crdb-certs" in secure and "Insecure" not in secure
