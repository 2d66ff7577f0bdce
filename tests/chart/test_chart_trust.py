"""Trusted backups on the chart side: which pod gets which key (signing, age, SSE-C, CAs),
the values' schema, the install-time rules between values, and the NOTES warnings.

Every key lives in a Secret the operator made; values only name Secrets and ConfigMaps.
"""

from __future__ import annotations

import re
import subprocess

import kubernetes_validate
import pytest

from devkit import helm as helms

from .conftest import (
    CI_VALUES,
    DOC_FLAGS,
    MANAGER_IMAGE,
    UMBRELLA,
    env_of,
    find,
    notes as render_notes,
    pod_spec,
    render,
    render_error,
    render_text,
)
from .test_chart_kube_schemas import NEWEST, OLDEST

AGE = "age1f2lumtra25fxdhrmt9ac0pwadsy8pvehf50datzpaqu5k0hexqxqqm9sk6"
SSH_ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDtQ9ObAx6tHBiS4qOHt/ms1Ok8eyEObOeI2fgWKSlIy ops@example"
SSH_RSA = ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCds/tW64LaZBpAwe3lz1ZVpLheGjzCVutWy/zNsAEPXrcFy3XEFLR1GbapB"
           "Q/uOXFrqEGxyrPxxT0R4NiBRhpvUrq0FtEyULT8RQ7CcWIlvWwhCp3KXMJM0rxrfBfrI+SfXECBlcSHPDfI1Mp5yXRuz/KD80CMl"
           "vJ501PnqDFNDTZK51FHoKdiSSoQ6RSA7tVcPBvtd1hcS1X2wB71AgGNtjinP4e8X4/s1c8y9WTQIFRF9kEC5lufdflPRYpdAe1pO"
           "Gp0VMEb5Xtk4RlzMZ3wiaL/fp5iaofKJkeMajPnbJbg3rxAodw4n873G/0EpLGp2nDOcoZmQxXloujuAGp1 root@vm")

SUB = "enclaveos-chart."
# Every kind of pod that runs the program: backup, restore hook, verify CronJob, both helm tests.
EVERY_POD = (
    f"{SUB}Verify.CronSchedule=0 3 * * 0",
    f"{SUB}Verify.HelmTest=true",
    f"{SUB}restore.fromObject=latest",
)
ROLES = {
    "backup": ("CronJob", "r1-enclaveos-backup"),
    "restore": ("Job", "r1-enclaveos-restore"),
    "verify": ("CronJob", "r1-enclaveos-verify"),
    "test-verify": ("Pod", "r1-enclaveos-test-verify"),
    "test-storage": ("Pod", "r1-enclaveos-test-storage"),
}
READERS = ("restore", "verify", "test-verify")
SIGNING = f"{SUB}Backup.Signing.SecretName=enclave-backup-signing"
RECIPIENTS = f"{SUB}Backup.Encryption.Recipients={{{AGE},{SSH_ED25519}}}"
IDENTITIES = (f"{SUB}restore.identitySecretName=restore-age", f"{SUB}Verify.IdentitySecretName=verify-age")
TRUST_ENV = ("ENCLAVE_BACKUP_SIGNING_KEY_FILE", "ENCLAVE_BACKUP_SIGNING_PUBLIC_KEY_FILE",
             "ENCLAVE_BACKUP_ALLOW_UNVERIFIED", "ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS",
             "ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE", "ENCLAVE_BACKUP_SSE", "ENCLAVE_BACKUP_SSE_KMS_KEY_ID",
             "ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE", "AWS_CA_BUNDLE", "PGSSLROOTCERT")
EXTERNAL_DB = (f"{SUB}cockroachdb.enabled=false", f"{SUB}externalDatabase.host=pg.example.com",
               f"{SUB}externalDatabase.port=5432")


def trust_render(helm, *more, extra=()):
    return render(helm, *MANAGER_IMAGE, *DOC_FLAGS, *EVERY_POD, *more, extra=extra)


def pods(objs) -> dict[str, tuple[dict, dict]]:
    """role -> (pod spec, its one container)."""
    out = {}
    for role, (kind, name) in ROLES.items():
        spec = pod_spec(find(objs, kind, name))
        (c,) = spec["containers"]
        out[role] = (spec, c)
    return out


def files(spec: dict, c: dict) -> dict[str, dict]:
    """Env var -> the file it names: which Secret or ConfigMap, which key, mode, mount.

    Checks the wiring on the way: the path is a mounted volume's directory plus the one
    item the volume projects.
    """
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    out = {}
    for name, e in env_of(c).items():
        value = e.get("value", "")
        if not value.startswith("/etc/enclave-backup/"):
            continue
        directory, _, file = value.rpartition("/")
        mount = mounts[directory]
        vol = volumes[mount["name"]]
        source = vol.get("secret") or vol["configMap"]
        (item,) = source["items"]
        assert item["path"] == file, name
        out[name] = {
            "kind": "secret" if "secret" in vol else "configMap",
            "name": source.get("secretName") or source.get("name"),
            "key": item["key"],
            "mode": source["defaultMode"],
            "readOnly": mount.get("readOnly"),
            "path": value,
        }
    # Nothing is mounted that no variable names.
    assert {m for m in mounts if m != "/tmp"} == {f["path"].rpartition("/")[0] for f in out.values()}
    return out


def value(c: dict, name: str):
    e = env_of(c).get(name)
    return None if e is None else e["value"]


# --- defaults -------------------------------------------------------------------------------


def test_defaults_mount_no_key_and_set_only_that_readers_refuse_unsigned_backups(helm):
    for role, (spec, c) in pods(trust_render(helm)).items():
        assert [v["name"] for v in spec["volumes"]] == ["tmp"], role
        env = env_of(c)
        present = [k for k in TRUST_ENV if k in env]
        assert present == (["ENCLAVE_BACKUP_ALLOW_UNVERIFIED"] if role in READERS else []), role
        if role in READERS:
            assert env["ENCLAVE_BACKUP_ALLOW_UNVERIFIED"]["value"] == "false"


def test_every_program_pod_lets_its_group_read_mounted_keys(helm):
    objs = trust_render(helm, SIGNING, *IDENTITIES, "global.S3.ServerSideEncryption=SSE-C",
                        "global.S3.SseCustomerKeySecretName=sse-c", "global.S3.CaBundle.SecretName=s3-ca")
    for role, (spec, c) in pods(objs).items():
        sc = spec["securityContext"]
        # The kubelet writes Secret files as root; with fsGroup they belong to the program's group.
        assert sc["runAsUser"] == 10001 and sc["fsGroup"] == sc["runAsGroup"] == 10001, role
        for env, f in files(spec, c).items():
            assert f["readOnly"] is True, (role, env)
            assert f["mode"] == (0o440 if f["kind"] == "secret" else 0o444), (role, env)
    # Written as decimal: 0440 in YAML 1.2 would be the decimal 440.
    text = render_text(helm, *MANAGER_IMAGE, *DOC_FLAGS, SIGNING)
    assert "defaultMode: 288" in text and "defaultMode: 0" not in text


# --- signing --------------------------------------------------------------------------------


def test_only_the_backup_gets_the_private_signing_key_and_only_readers_the_public_key(helm):
    for role, (spec, c) in pods(trust_render(helm, SIGNING)).items():
        f = files(spec, c)
        keys = [v["key"] for v in f.values()]
        if role == "backup":
            assert f == {"ENCLAVE_BACKUP_SIGNING_KEY_FILE": {
                "kind": "secret", "name": "enclave-backup-signing", "key": "private.pem", "mode": 0o440,
                "readOnly": True, "path": "/etc/enclave-backup/signing/private.pem"}}
        elif role in READERS:
            assert f == {"ENCLAVE_BACKUP_SIGNING_PUBLIC_KEY_FILE": {
                "kind": "secret", "name": "enclave-backup-signing", "key": "public.pem", "mode": 0o440,
                "readOnly": True, "path": "/etc/enclave-backup/signing/public.pem"}}
        else:  # the storage check neither signs nor reads a backup
            assert f == {}
        if role != "backup":
            assert "private.pem" not in keys, role
        # Whatever the Secret holds, a pod sees only the items the chart selects.
        for v in spec["volumes"]:
            if "secret" in v:
                assert len(v["secret"]["items"]) == 1, role


def test_allow_unverified_reaches_restore_and_verify_only(helm):
    objs = trust_render(helm, SIGNING, f"{SUB}Backup.Signing.AllowUnverified=true")
    for role, (_, c) in pods(objs).items():
        assert value(c, "ENCLAVE_BACKUP_ALLOW_UNVERIFIED") == ("true" if role in READERS else None), role


# --- client-side encryption -----------------------------------------------------------------


def test_recipients_reach_the_backup_one_per_line_and_no_other_pod(helm):
    objs = trust_render(helm, f"{SUB}Backup.Encryption.Recipients={{{AGE},{SSH_ED25519},{SSH_RSA}}}")
    for role, (_, c) in pods(objs).items():
        got = value(c, "ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS")
        # SSH keys hold spaces: the program splits on newlines only.
        assert got == (f"{AGE}\n{SSH_ED25519}\n{SSH_RSA}" if role == "backup" else None), role
    one = pods(trust_render(helm, f"{SUB}Backup.Encryption.Recipients={{{AGE}}}"))["backup"][1]
    assert value(one, "ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS") == AGE


def test_each_reader_gets_its_own_identity_and_the_backup_none(helm):
    objs = trust_render(helm, RECIPIENTS, *IDENTITIES)
    expect = {"restore": "restore-age", "verify": "verify-age", "test-verify": "verify-age"}
    for role, (spec, c) in pods(objs).items():
        f = files(spec, c)
        if role in expect:
            assert f == {"ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE": {
                "kind": "secret", "name": expect[role], "key": "identity.txt", "mode": 0o440,
                "readOnly": True, "path": "/etc/enclave-backup/age/identity.txt"}}, role
        else:
            assert f == {}, role
    # The backup encrypts with public recipients only; no identity ever reaches it.
    spec, c = pods(objs)["backup"]
    assert not any("identity" in str(v) for v in spec["volumes"])


def test_restore_identity_and_verify_identity_are_independent(helm):
    p = pods(trust_render(helm, f"{SUB}restore.identitySecretName=restore-age"))
    assert value(p["restore"][1], "ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE")
    assert value(p["verify"][1], "ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE") is None
    assert value(p["test-verify"][1], "ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE") is None


# --- server-side encryption -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["AES256", "aws:kms"])
def test_sse_mode_reaches_every_program_pod(helm, mode):
    for role, (spec, c) in pods(trust_render(helm, f"global.S3.ServerSideEncryption={mode}")).items():
        assert value(c, "ENCLAVE_BACKUP_SSE") == mode, role
        assert value(c, "ENCLAVE_BACKUP_SSE_KMS_KEY_ID") is None and files(spec, c) == {}, role


def test_kms_key_id_reaches_every_program_pod(helm):
    arn = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    objs = trust_render(helm, "global.S3.ServerSideEncryption=aws:kms", f"global.S3.KmsKeyId={arn}")
    for role, (_, c) in pods(objs).items():
        assert value(c, "ENCLAVE_BACKUP_SSE") == "aws:kms" and value(c, "ENCLAVE_BACKUP_SSE_KMS_KEY_ID") == arn, role


def test_sse_c_key_is_mounted_into_every_program_pod(helm):
    objs = trust_render(helm, "global.S3.ServerSideEncryption=SSE-C", "global.S3.SseCustomerKeySecretName=sse-c")
    for role, (spec, c) in pods(objs).items():
        assert value(c, "ENCLAVE_BACKUP_SSE") == "SSE-C", role
        # Every read needs the key too (restore, verify, and the storage check's test object).
        assert files(spec, c) == {"ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE": {
            "kind": "secret", "name": "sse-c", "key": "SSE_CUSTOMER_KEY", "mode": 0o440,
            "readOnly": True, "path": "/etc/enclave-backup/sse-c/SSE_CUSTOMER_KEY"}}, role


# --- TLS ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, flag", [("configMap", "ConfigMapName"), ("secret", "SecretName")])
def test_s3_ca_bundle_reaches_every_program_pod(helm, kind, flag):
    objs = trust_render(helm, f"global.S3.CaBundle.{flag}=storage-ca", "global.S3.CaBundle.Key=bundle.pem")
    for role, (spec, c) in pods(objs).items():
        assert files(spec, c) == {"AWS_CA_BUNDLE": {
            "kind": kind, "name": "storage-ca", "key": "bundle.pem", "mode": 0o444 if kind == "configMap" else 0o440,
            "readOnly": True, "path": "/etc/enclave-backup/s3-ca/ca.crt"}}, role


@pytest.mark.parametrize("kind, flag", [("secret", "caSecretName"), ("configMap", "caConfigMapName")])
@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_database_ca_reaches_every_program_pod(helm, kind, flag, mode):
    objs = trust_render(helm, *EXTERNAL_DB, f"{SUB}externalDatabase.sslMode={mode}",
                        f"{SUB}externalDatabase.{flag}=pg-ca")
    for role, (spec, c) in pods(objs).items():
        assert value(c, "PGSSLMODE") == mode, role
        f = files(spec, c)
        assert f["PGSSLROOTCERT"]["path"] == "/etc/enclave-backup/db-ca/ca.crt", role
        assert (f["PGSSLROOTCERT"]["kind"], f["PGSSLROOTCERT"]["name"], f["PGSSLROOTCERT"]["key"]) == \
            (kind, "pg-ca", "ca.crt"), role


def test_the_charts_own_cockroachdb_gets_no_database_ca(helm):
    # The chart's CockroachDB runs insecure; a CA named for an external database is not mounted.
    for role, (_, c) in pods(trust_render(helm, f"{SUB}externalDatabase.caSecretName=pg-ca")).items():
        assert value(c, "PGSSLROOTCERT") is None and value(c, "PGSSLMODE") == "disable", role


def test_external_db_ci_values_verify_the_server_against_its_ca(helm):
    values = UMBRELLA / "ci" / "external-db-values.yaml"
    objs = render(helm, files=[values])
    program = [o for o in objs if o["kind"] in ("CronJob", "Job", "Pod")]
    assert program
    for obj in program:
        spec = pod_spec(obj)
        (c,) = spec["containers"]
        assert value(c, "PGSSLMODE") == "verify-full"
        assert files(spec, c)["PGSSLROOTCERT"] == {
            "kind": "secret", "name": "enclave-db-ca", "key": "ca.crt", "mode": 0o440, "readOnly": True,
            "path": "/etc/enclave-backup/db-ca/ca.crt"}
    for kube in (OLDEST, NEWEST):
        for obj in render(helm, files=[values], extra=("--kube-version", kube)):
            kubernetes_validate.validate(obj, kube, strict=True)


def test_external_db_ci_values_install_on_helm4():
    proc = subprocess.run([str(helms.binary("helm4")), "install", "r1", str(UMBRELLA), "--dry-run=client",
                           "-f", str(UMBRELLA / "ci" / "external-db-values.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "PGSSLROOTCERT" in proc.stdout


def test_everything_on_validates_strictly(helm):
    objs = trust_render(helm, SIGNING, RECIPIENTS, *IDENTITIES, "global.S3.ServerSideEncryption=SSE-C",
                        "global.S3.SseCustomerKeySecretName=sse-c", "global.S3.CaBundle.ConfigMapName=s3-ca",
                        *EXTERNAL_DB, f"{SUB}externalDatabase.sslMode=verify-full",
                        f"{SUB}externalDatabase.caConfigMapName=pg-ca", extra=("--kube-version", NEWEST))
    for obj in objs:
        kubernetes_validate.validate(obj, NEWEST, strict=True)


# --- no key material in rendered objects ----------------------------------------------------

KEY_MATERIAL = re.compile(r"-----BEGIN|PRIVATE KEY|AGE-SECRET-KEY-|AGE-PLUGIN-", re.I)


@pytest.mark.parametrize("values", [v for v in CI_VALUES if v.name in ("trust-values.yaml", "external-db-values.yaml")],
                         ids=lambda p: p.name)
def test_rendering_with_everything_on_holds_no_key_material(helm, values):
    text = render_text(helm, files=[values])
    assert not KEY_MATERIAL.search(text)
    objs = render(helm, files=[values])
    assert not [o for o in objs if o["kind"] in ("Secret", "ConfigMap")], "the chart creates nothing secret"
    for obj in objs:
        if obj["kind"] not in ("Pod", "Deployment", "StatefulSet", "CronJob", "Job"):
            continue
        for c in pod_spec(obj)["containers"]:
            for name, e in env_of(c).items():
                # A key is a file from a Secret, never a value: *_FILE and CA paths point at mounts.
                if name.endswith("_FILE") or name in ("AWS_CA_BUNDLE", "PGSSLROOTCERT"):
                    assert e["value"].startswith("/etc/enclave-backup/"), name


def test_trust_ci_values_put_each_key_where_it_belongs(helm):
    p = pods(render(helm, files=[UMBRELLA / "ci" / "trust-values.yaml"]))
    assert set(files(*p["backup"])) == {"ENCLAVE_BACKUP_SIGNING_KEY_FILE", "AWS_CA_BUNDLE"}
    for role in READERS:
        assert set(files(*p[role])) == {"ENCLAVE_BACKUP_SIGNING_PUBLIC_KEY_FILE",
                                        "ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE", "AWS_CA_BUNDLE"}, role
    assert set(files(*p["test-storage"])) == {"AWS_CA_BUNDLE"}
    for role, (_, c) in p.items():
        assert value(c, "ENCLAVE_BACKUP_SSE") == "aws:kms", role


def test_a_private_key_given_as_a_recipient_is_refused_without_echoing_it(helm):
    identity = "AGE-SECRET-KEY-1" + "Q" * 58
    err = render_error(helm, *MANAGER_IMAGE, *DOC_FLAGS, f"{SUB}Backup.Encryption.Recipients={{{identity}}}")
    assert "Recipients" in err and identity not in err and "QQQQ" not in err


def test_a_key_passed_as_a_value_is_refused(helm):
    err = render_error(helm, *MANAGER_IMAGE, *DOC_FLAGS, f"{SUB}Backup.Signing.PrivateKey=MC4CAQAwBQYDK2VwBCIEIsentinel")
    assert "PrivateKey" in err and "sentinel" not in err


# --- schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, named",
    [
        (f"{SUB}Backup.Encryption.Recipients={{age1short}}", "Recipients"),
        (f"{SUB}Backup.Encryption.Recipients={{{AGE.upper()}}}", "Recipients"),
        (f"{SUB}Backup.Encryption.Recipients={{{AGE[:-1]}b}}", "Recipients"),  # b is not bech32
        (f"{SUB}Backup.Encryption.Recipients={{ssh-dss AAAAB3NzaC1kc3MAAACBAP}}", "Recipients"),
        (f"{SUB}Backup.Encryption.Recipients={{ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA}}", "Recipients"),
        (f"{SUB}Backup.Encryption.Recipients={{{AGE},{AGE}}}", "Recipients"),
        (f"{SUB}Backup.Encryption.Recipients={AGE}", "Recipients"),  # a string, not a list
        (f"{SUB}Backup.Signing.SecretName=Signing_Keys", "SecretName"),
        (f"{SUB}Backup.Signing.AllowUnverified=maybe", "AllowUnverified"),
        (f"{SUB}Backup.Signing.Secret=enclave-backup-signing", "Secret"),
        (f"{SUB}Backup.Encryption.Recipient={{{AGE}}}", "Recipient"),
        (f"{SUB}Verify.IdentitySecretName=Age Identity", "IdentitySecretName"),
        (f"{SUB}restore.identitySecretName=-age", "identitySecretName"),
        ("global.S3.ServerSideEncryption=aws:KMS", "ServerSideEncryption"),
        ("global.S3.ServerSideEncryption=KMS", "ServerSideEncryption"),
        ("global.S3.KmsKeyId=key with spaces", "KmsKeyId"),
        ("global.S3.SseCustomerKeySecretName=SSE_C", "SseCustomerKeySecretName"),
        ("global.S3.CaBundle.Name=storage-ca", "Name"),
        ("global.S3.CaBundle.Key=", "Key"),
        ("global.S3.CaBundle.Key=a/b", "Key"),
        ("global.S3.CaBundle.SecretName=Storage CA", "SecretName"),
        (f"{SUB}externalDatabase.caKey=", "caKey"),
        (f"{SUB}externalDatabase.caSecretName=PG_CA", "caSecretName"),
        (f"{SUB}externalDatabase.caConfigMapName=pg ca", "caConfigMapName"),
    ],
)
def test_bad_trust_values_fail_naming_them(helm, flag, named):
    err = render_error(helm, *MANAGER_IMAGE, *DOC_FLAGS, flag)
    assert named in err


def test_subchart_schema_accepts_the_recipient_forms(helm):
    sub = UMBRELLA / "charts" / "enclaveos-chart"
    sets = [f.removeprefix(SUB) for f in (*MANAGER_IMAGE, *DOC_FLAGS)]
    objs = render(helm, *sets, f"Backup.Encryption.Recipients={{{AGE},{SSH_ED25519},{SSH_RSA}}}",
                  "global.S3.ServerSideEncryption=AES256", chart=sub)
    c = pod_spec(find(objs, "CronJob"))["containers"][0]
    assert value(c, "ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS").count("\n") == 2


def test_a_recipient_holding_a_newline_is_refused(helm, tmp_path):
    # One recipient per line: a value with a line break would smuggle in a second one.
    values = tmp_path / "v.yaml"
    values.write_text(f'enclaveos-chart:\n  Backup:\n    Encryption:\n      Recipients: ["{AGE}\\n{AGE[:-1]}q"]\n')
    err = render_error(helm, *MANAGER_IMAGE, *DOC_FLAGS, files=[values])
    assert "Recipients" in err


# --- install-time rules between values ------------------------------------------------------

RULES = [
    (("global.S3.KmsKeyId=alias/backups",),
     'global.S3.KmsKeyId is set but global.S3.ServerSideEncryption is "": '
     "set global.S3.ServerSideEncryption=aws:kms, or unset global.S3.KmsKeyId"),
    (("global.S3.ServerSideEncryption=AES256", "global.S3.KmsKeyId=alias/backups"),
     'global.S3.KmsKeyId is set but global.S3.ServerSideEncryption is "AES256"'),
    (("global.S3.ServerSideEncryption=SSE-C",),
     "global.S3.ServerSideEncryption=SSE-C needs global.S3.SseCustomerKeySecretName"),
    (("global.S3.SseCustomerKeySecretName=sse-c",),
     'global.S3.SseCustomerKeySecretName is set but global.S3.ServerSideEncryption is "": '
     "set global.S3.ServerSideEncryption=SSE-C, or unset global.S3.SseCustomerKeySecretName"),
    (("global.S3.CaBundle.ConfigMapName=a", "global.S3.CaBundle.SecretName=b"),
     "global.S3.CaBundle.ConfigMapName and global.S3.CaBundle.SecretName are both set"),
    ((*EXTERNAL_DB, f"{SUB}externalDatabase.caSecretName=a", f"{SUB}externalDatabase.caConfigMapName=b"),
     "enclaveos-chart.externalDatabase.caSecretName and enclaveos-chart.externalDatabase.caConfigMapName are both set"),
    ((*EXTERNAL_DB, f"{SUB}externalDatabase.sslMode=verify-full"),
     "enclaveos-chart.externalDatabase.sslMode=verify-full needs the database server's CA certificate: "
     "set enclaveos-chart.externalDatabase.caSecretName (or caConfigMapName)"),
    ((*EXTERNAL_DB, f"{SUB}externalDatabase.sslMode=verify-ca"),
     "enclaveos-chart.externalDatabase.sslMode=verify-ca needs the database server's CA certificate"),
]


@pytest.mark.parametrize("flags, message", RULES, ids=[m.split(" ")[0] + f"-{i}" for i, (_, m) in enumerate(RULES)])
def test_inconsistent_values_fail_at_install_time_naming_the_value_and_the_fix(helm, flags, message):
    err = render_error(helm, *MANAGER_IMAGE, *DOC_FLAGS, *flags)
    assert message in err
    # The chart's own check, not the schema's: it holds with schema validation skipped too.
    proc = subprocess.run([helm, "template", "r1", str(UMBRELLA), "--skip-schema-validation"]
                          + [a for f in (*MANAGER_IMAGE, *DOC_FLAGS, *flags) for a in ("--set", f)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and message in proc.stderr


def test_helm4_install_reports_the_rule():
    sets = (*MANAGER_IMAGE, *DOC_FLAGS, "global.S3.ServerSideEncryption=SSE-C")
    proc = subprocess.run([str(helms.binary("helm4")), "install", "r1", str(UMBRELLA), "--dry-run=client"]
                          + [a for f in sets for a in ("--set", f)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "global.S3.ServerSideEncryption=SSE-C needs global.S3.SseCustomerKeySecretName" in proc.stderr


def test_verify_full_needs_no_ca_while_no_program_pod_runs(helm):
    # Without backup, restore or verify nothing of the chart connects with these settings.
    objs = render(helm, *MANAGER_IMAGE, *EXTERNAL_DB, f"{SUB}externalDatabase.sslMode=verify-full")
    assert not [o for o in objs if o["kind"] in ("CronJob", "Job", "Pod")]


# --- NOTES ----------------------------------------------------------------------------------

UNSIGNED = ("Backups are unsigned: enclaveos-chart.Backup.Signing.SecretName is empty. Restore and verify "
            "refuse unsigned backups unless enclaveos-chart.Backup.Signing.AllowUnverified=true.")
ALLOW = "enclaveos-chart.Backup.Signing.AllowUnverified=true: restore and verify accept backups whose signature is missing or wrong"
NO_VERIFY_IDENTITY = "but enclaveos-chart.Verify.IdentitySecretName is empty: the verify cannot decrypt them"
NO_RESTORE_IDENTITY = "but enclaveos-chart.restore.identitySecretName is empty: the restore cannot decrypt"
PLAIN_HTTP = "global.S3.Endpoint is plain http to "


def test_notes_warn_that_backups_are_unsigned():
    text = render_notes(*MANAGER_IMAGE, *DOC_FLAGS)
    assert "WARNINGS:" in text and UNSIGNED in text and ALLOW not in text
    assert "WARNINGS:" not in render_notes(*MANAGER_IMAGE, *DOC_FLAGS, SIGNING)
    # No backup, restore or verify: nothing to sign, nothing to warn about.
    assert "WARNINGS:" not in render_notes(*MANAGER_IMAGE)


def test_notes_warn_about_allow_unverified():
    text = render_notes(*MANAGER_IMAGE, *DOC_FLAGS, SIGNING, f"{SUB}Backup.Signing.AllowUnverified=true")
    assert ALLOW in text and "Backups are unsigned" not in text
    text = render_notes(*MANAGER_IMAGE, *DOC_FLAGS, f"{SUB}Backup.Signing.AllowUnverified=true")
    assert ALLOW in text and "accept them only because enclaveos-chart.Backup.Signing.AllowUnverified=true" in text


def test_notes_warn_about_encrypted_backups_no_verify_or_restore_can_decrypt():
    text = render_notes(*MANAGER_IMAGE, *DOC_FLAGS, *EVERY_POD, SIGNING, RECIPIENTS)
    assert NO_VERIFY_IDENTITY in text and NO_RESTORE_IDENTITY in text
    text = render_notes(*MANAGER_IMAGE, *DOC_FLAGS, *EVERY_POD, SIGNING, RECIPIENTS, *IDENTITIES)
    assert "WARNINGS:" not in text
    # The helm test alone verifies too.
    text = render_notes(*MANAGER_IMAGE, *DOC_FLAGS, SIGNING, RECIPIENTS, f"{SUB}Verify.HelmTest=true")
    assert NO_VERIFY_IDENTITY in text and NO_RESTORE_IDENTITY not in text


@pytest.mark.parametrize("endpoint, host", [
    ("http://minio.example.com:9000", "minio.example.com"),
    ("http://10.0.0.5:9000", "10.0.0.5"),
    ("http://S3.Example.COM/", "s3.example.com"),
    ("http://[fd00::1]:9000", "[fd00::1]"),
    ("http://minio.storage:9000", "minio.storage"),
])
def test_notes_warn_about_plain_http_to_a_remote_store(endpoint, host):
    text = render_notes(*MANAGER_IMAGE, *DOC_FLAGS, SIGNING, f"global.S3.Endpoint={endpoint}")
    assert f"{PLAIN_HTTP}{host}, which is neither loopback nor in the cluster" in text


@pytest.mark.parametrize("endpoint", [
    "http://localhost:9000", "http://127.0.0.1:9000", "http://[::1]:9000", "http://minio.storage.svc:9000",
    "http://minio.storage.svc.cluster.local:9000", "http://minio:9000", "https://minio.example.com",
    "s3.eu-de.cloud-object-storage.appdomain.cloud",
])
def test_notes_do_not_warn_about_loopback_in_cluster_or_https(endpoint):
    assert PLAIN_HTTP not in render_notes(*MANAGER_IMAGE, *DOC_FLAGS, SIGNING, f"global.S3.Endpoint={endpoint}")
