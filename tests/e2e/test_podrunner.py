"""The pod runner itself: Kubernetes' expansion and env rules, Secret errors, deadlines, DNS."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from devkit.podrunner import VENV, Image, PodRunner, config_map, expand, secret

NS = "apps"
PRINT_ENV = ["python3", "-c", "import json, os; print(json.dumps(dict(os.environ)))"]


def job(env=None, env_from=None, command=PRINT_ENV, args=None, deadline=None, grace=None, volumes=True) -> dict:
    container = {"name": "c", "image": "x", "command": command}
    if args is not None:
        container["args"] = args
    if env is not None:
        container["env"] = env
    if env_from is not None:
        container["envFrom"] = env_from
    spec = {"restartPolicy": "Never", "containers": [container]}
    if volumes:
        container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
        spec["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    job_spec = {"template": {"metadata": {"labels": {"app": "demo"}}, "spec": spec}}
    if deadline is not None:
        job_spec["activeDeadlineSeconds"] = deadline
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "r1-restore", "annotations": {"helm.sh/hook": "post-install,post-upgrade"}},
            "spec": job_spec}


def run(*objects, services=None, **kw):
    runner = PodRunner(objects, NS, services=services)
    return runner.run(runner.hook_job(), **kw)


def env_of(result) -> dict:
    assert result.exit_code == 0, result.logs
    return json.loads(result.stdout)


# --- $(VAR) expansion, Kubernetes' rules ---

@pytest.mark.parametrize("text, want", [
    ("$(A)", "a"),
    ("x$(A)y$(B)z", "xaybz"),
    ("$$(A)", "$(A)"),            # escaped: literal reference
    ("$$$(A)", "$a"),
    ("$(UNKNOWN)", "$(UNKNOWN)"),  # unknown: left as written
    ("$(A", "$(A"),                # incomplete
    ("$()", "$()"),
    ("$A", "$A"),                  # shell syntax means nothing
    ("100$", "100$"),
    ("$$", "$"),
    ("$(EMPTY)|", "|"),
])
def test_expand_follows_kubernetes(text, want):
    assert expand(text, {"A": "a", "B": "b", "EMPTY": ""}.get) == want


def test_env_values_see_only_earlier_variables_and_envfrom():
    result = run(
        config_map("cm", {"HOST": "db", "PORT": "5432"}),
        job(env_from=[{"configMapRef": {"name": "cm"}, "prefix": "DB_"}],
            env=[{"name": "URL", "value": "pg://$(DB_HOST):$(DB_PORT)/$(NAME)"},
                 {"name": "NAME", "value": "malbork"},
                 {"name": "AGAIN", "value": "$(NAME)-$$(NAME)"},
                 {"name": "DB_HOST", "value": "override"}]))
    env = env_of(result)
    assert env["URL"] == "pg://db:5432/$(NAME)"   # NAME was defined later
    assert env["AGAIN"] == "malbork-$(NAME)"
    assert env["DB_HOST"] == "override"             # env wins over envFrom
    assert env["DB_PORT"] == "5432"


def test_args_expanded_with_the_container_env_not_the_image_env():
    result = run(job(command=["python3", "-c", "import sys; print(sys.argv[1:])"],
                     args=["$(WHO)", "$(PATH)", "$$(WHO)", "$(NOPE)"],
                     env=[{"name": "WHO", "value": "backup"}]))
    assert result.exit_code == 0, result.logs
    assert result.stdout.strip() == str(["backup", "$(PATH)", "$(WHO)", "$(NOPE)"])


def test_environment_starts_empty_except_image_and_pod(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-test-runner")
    monkeypatch.setenv("PGHOST", "leak")
    env = env_of(run(job(env=[{"name": "ONE", "value": "1"}])))
    image = Image.from_dockerfile()
    assert "AWS_SECRET_ACCESS_KEY" not in env and "PGHOST" not in env
    # Whatever the interpreter adds on its own (LC_CTYPE coercion) aside, nothing else.
    assert set(env) - {"LC_CTYPE"} == set(image.env) | {"HOSTNAME", "ONE"}
    assert env["PATH"].split(":")[0] == str(VENV / "bin")
    assert env["HOSTNAME"].startswith("r1-restore-")
    # HOME=/tmp in the image: the pod's emptyDir at /tmp, not the machine's /tmp.
    assert env["HOME"] != "/tmp" and os.path.basename(env["HOME"]) == "tmp"


def test_command_resolves_to_the_console_script_the_dockerfile_installs():
    image = Image.from_dockerfile()
    assert image.entrypoint == ["enclave-backup"]
    result = run(job(command=["enclave-backup"], args=["--version"]))
    assert result.exit_code == 0, result.logs
    assert result.argv[0] == str(VENV / "bin" / "enclave-backup")
    assert result.stdout.startswith("enclave-backup ")


def test_without_command_the_image_entrypoint_and_args_run():
    obj = job(command=None, args=["--version"])
    del obj["spec"]["template"]["spec"]["containers"][0]["command"]
    result = run(obj)
    assert result.exit_code == 0 and result.stdout.startswith("enclave-backup ")


def test_unknown_executable_fails_to_start():
    result = run(job(command=["no-such-program"]))
    assert result.reason == "StartError" and result.exit_code == 128


# --- Secrets and ConfigMaps ---

KEY_REF = [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "AWS_ACCESS_KEY_ID"}}}]


def test_secret_key_ref_reads_the_secret():
    env = env_of(run(secret("creds", {"AWS_ACCESS_KEY_ID": "AKIA123"}), job(env=KEY_REF)))
    assert env["KEY"] == "AKIA123"


def test_missing_secret_is_a_container_config_error():
    result = run(job(env=KEY_REF))
    assert result.reason == "CreateContainerConfigError" and result.exit_code is None
    assert result.message == 'secret "creds" not found'


def test_missing_key_is_a_container_config_error():
    result = run(secret("creds", {"OTHER": "x"}), job(env=KEY_REF))
    assert result.reason == "CreateContainerConfigError"
    assert result.message == f"couldn't find key AWS_ACCESS_KEY_ID in Secret {NS}/creds"


def test_secret_in_another_namespace_is_not_seen():
    result = run(secret("creds", {"AWS_ACCESS_KEY_ID": "x"}, namespace="other"), job(env=KEY_REF))
    assert result.reason == "CreateContainerConfigError"


def test_optional_references_may_be_missing():
    env = env_of(run(job(
        env=[{"name": "A", "valueFrom": {"secretKeyRef": {"name": "none", "key": "k", "optional": True}}},
             {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "none", "key": "k", "optional": True}}}],
        env_from=[{"secretRef": {"name": "none", "optional": True}}])))
    assert "A" not in env and "B" not in env


def test_config_map_errors_and_env_from_secret():
    missing = run(job(env=[{"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]))
    assert missing.reason == "CreateContainerConfigError" and missing.message == 'configmap "cm" not found'
    no_from = run(job(env_from=[{"secretRef": {"name": "creds"}}]))
    assert no_from.message == 'secret "creds" not found'
    env = env_of(run(secret("creds", {"X": "1"}), config_map("cm", {"k": "v"}),
                     job(env_from=[{"secretRef": {"name": "creds"}, "prefix": "S_"}],
                         env=[{"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}])))
    assert env["S_X"] == "1" and env["B"] == "v"


def test_field_refs():
    env = env_of(run(job(env=[
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}])))
    assert env["NS"] == NS and env["POD"] == env["HOSTNAME"] and env["APP"] == "demo"


# --- deadline ---

def test_active_deadline_kills_and_reports_deadline_exceeded():
    t0 = time.monotonic()
    result = run(job(command=["python3", "-c", "import time; print('started', flush=True); time.sleep(60)"],
                     deadline=1, grace=5))
    assert result.reason == "DeadlineExceeded"
    assert result.exit_code == 128 + 15      # ended by SIGTERM
    assert "started" in result.stdout
    assert time.monotonic() - t0 < 10


def test_deadline_escalates_to_sigkill_after_the_grace_period():
    ignore_term = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "print('up', flush=True); time.sleep(60)")
    t0 = time.monotonic()
    result = run(job(command=["python3", "-c", ignore_term], deadline=1, grace=1))
    assert result.reason == "DeadlineExceeded" and result.exit_code == 128 + 9
    assert 2 <= time.monotonic() - t0 < 10


def test_exit_code_and_logs_are_returned():
    result = run(job(command=["python3", "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"]))
    assert (result.reason, result.exit_code, result.stdout, result.stderr) == ("Error", 3, "out\n", "err\n")


# --- cluster DNS ---

def test_service_names_of_the_release_map_to_loopback():
    services = {"r1-enclaveos-cockroachdb-public:26257": 40001, "minio.storage:9000": 40002}
    for host in ("r1-enclaveos-cockroachdb-public", f"r1-enclaveos-cockroachdb-public.{NS}",
                 f"r1-enclaveos-cockroachdb-public.{NS}.svc", f"r1-enclaveos-cockroachdb-public.{NS}.svc.cluster.local"):
        env = env_of(run(job(env=[{"name": "PGHOST", "value": host}, {"name": "PGPORT", "value": "26257"},
                                  {"name": "AWS_ENDPOINT_URL", "value": "http://minio.storage.svc:9000/"},
                                  {"name": "OTHER", "value": "http://minio.storage:9001"}]),
                         services=services))
        assert (env["PGHOST"], env["PGHOSTADDR"], env["PGPORT"]) == (host, "127.0.0.1", "40001")
        assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:40002/"
        assert env["OTHER"] == "http://minio.storage:9001"       # another port: not that service
    # The bare name only resolves inside the service's own namespace.
    env = env_of(run(job(env=[{"name": "AWS_ENDPOINT_URL", "value": "http://minio:9000"}]), services=services))
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"


def test_a_checkout_under_tmp_is_not_moved_into_the_pods_tmp(monkeypatch):
    import devkit.podrunner as podrunner
    monkeypatch.setattr(podrunner, "VENV", Path("/tmp/checkout/.venv"))
    runner = podrunner.PodRunner([], "default")
    scratch = {"/tmp": Path("/scratch/pod/tmp")}
    assert runner._local_path("/opt/venv/bin:/usr/bin", scratch) == "/tmp/checkout/.venv/bin:/usr/bin"
    assert runner._local_path("/tmp/cache", scratch) == "/scratch/pod/tmp/cache"
