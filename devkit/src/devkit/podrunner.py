"""Run a container of a rendered workload the way the kubelet would, minus isolation.

Input: the objects `helm template` rendered plus the Secrets/ConfigMaps a user would have
created. The container's process gets exactly the environment Kubernetes would build
(image ENV, then envFrom, then env in order, `$(VAR)` expansion by Kubernetes' rules) and
the command the container runtime would exec (command/args, else the image's
ENTRYPOINT/CMD), resolved on the image's PATH with /opt/venv meaning this repository's
virtualenv: the same console script the Dockerfile installs. Nothing else leaks in from
the caller's environment.

Not emulated: isolation (user, read-only root filesystem, network), Job retries, service
link variables (`<SVC>_SERVICE_HOST`), resourceFieldRef. devkit.imagerunner runs
the same pods from the built image, with their isolation and limits.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets as _random
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from .paths import REPO, VENV

DOCKERFILE = REPO / "image" / "Dockerfile"
LOOPBACK = "127.0.0.1"
DEFAULT_GRACE_SECONDS = 30  # terminationGracePeriodSeconds' default


class ContainerConfigError(Exception):
    """What the kubelet reports as CreateContainerConfigError: the container never starts."""


# --- $(VAR) expansion: a port of k8s.io/kubernetes third_party/forked/golang/expansion ---

def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """`$(NAME)` -> value; unknown names stay as written; `$$` -> `$`; anything else verbatim."""
    out, checkpoint, cursor = [], 0, 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1:]
            if rest[0] == "$":              # escaped operator
                out.append("$")
                advance = 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close == -1:             # incomplete reference: keep "$(" and go on
                    out.append("$(")
                    advance = 1
                else:
                    name = rest[1:close]
                    value = lookup(name)
                    out.append(value if value is not None else f"$({name})")
                    advance = close + 1
            else:                           # a lone "$": keep it and the next character
                out.append("$" + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


# --- the image: what the Dockerfile's final stage sets ---

@dataclass
class Image:
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    workdir: str = "/"

    @classmethod
    def from_dockerfile(cls, path: Path = DOCKERFILE) -> "Image":
        lines, buf = [], ""
        for raw in path.read_text().splitlines():
            stripped = raw.strip()
            if not buf and (not stripped or stripped.startswith("#")):
                continue
            if stripped.startswith("#"):     # comments inside a continued instruction
                continue
            if stripped.endswith("\\"):
                buf += stripped[:-1] + " "
                continue
            lines.append(buf + stripped)
            buf = ""
        image = cls({}, [], [])
        for line in lines:
            op, _, rest = line.partition(" ")
            op, rest = op.upper(), rest.strip()
            if op == "FROM":                 # only the final stage is the image
                image = cls({}, [], [])
            elif op == "ENV":
                words = shlex.split(rest)
                if words and "=" not in words[0]:
                    image.env[words[0]] = " ".join(words[1:])
                else:
                    image.env.update(w.split("=", 1) for w in words)
            elif op in ("ENTRYPOINT", "CMD"):
                value = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
                if op == "ENTRYPOINT":
                    image.entrypoint, image.cmd = value, []   # ENTRYPOINT resets CMD
                else:
                    image.cmd = value
            elif op == "WORKDIR":
                image.workdir = rest
        return image


# --- objects ---

def secret(name: str, data: Mapping[str, str], namespace: str | None = None) -> dict:
    """A Secret as `kubectl create secret generic NAME --from-literal=K=V ...` creates it."""
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta,
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def config_map(name: str, data: Mapping[str, str], namespace: str | None = None) -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data)}


@dataclass
class Workload:
    kind: str                 # what it came from: CronJob, Job or Pod
    name: str
    pod_name: str
    pod_spec: dict
    labels: dict
    annotations: dict
    deadline: float | None    # activeDeadlineSeconds that applies (Job's or pod's, the smaller)


@dataclass
class PodResult:
    workload: Workload
    reason: str               # Completed, Error, DeadlineExceeded, CreateContainerConfigError, StartError
    exit_code: int | None     # None: the container never started
    stdout: str = ""
    stderr: str = ""
    message: str = ""
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def logs(self) -> str:
        return self.stdout + self.stderr

    @property
    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    def event(self, name: str) -> dict:
        hits = [e for e in self.events if e.get("event") == name]
        assert hits, f"no {name!r} event in the logs of {self.workload.pod_name}:\n{self.logs}"
        return hits[-1]


def _min_deadline(*values) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _suffix() -> str:
    # Like the generated suffixes of Job pods: five lower-case alphanumerics without vowels.
    return "".join(_random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))


class PodRunner:
    def __init__(self, objects: Iterable[dict], namespace: str, *, services: Mapping[str, int | str] | None = None,
                 image: Image | None = None):
        """services: {"<svc>[.<ns>]:<port>": loopback port}: what the cluster DNS would resolve."""
        self.objects = [o for o in objects if o]
        self.namespace = namespace
        self.image = image or Image.from_dockerfile()
        self.routes: dict[tuple[str, int], int] = {}
        for key, target in (services or {}).items():
            host, _, port = key.rpartition(":")
            lport = int(str(target).rpartition(":")[2])
            for alias in self._dns_names(host):
                self.routes[(alias, int(port))] = lport

    # -- picking a workload --

    def _find(self, kind: str, pred=lambda o: True) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == kind and pred(o)]

    def _one(self, hits: list[dict], what: str) -> dict:
        if len(hits) != 1:
            raise LookupError(f"expected one {what}, found {[h['metadata']['name'] for h in hits]}")
        return hits[0]

    def cronjob(self, name: str | None = None) -> Workload:
        """The pod a Job created from the CronJob's jobTemplate would run."""
        cj = self._one(self._find("CronJob", lambda o: name in (None, o["metadata"]["name"])), "CronJob")
        job_name = f"{cj['metadata']['name']}-{int(time.time() // 60)}"
        job_spec = cj["spec"]["jobTemplate"]["spec"]
        return self._from_job(job_name, job_spec, "CronJob")

    def hook_job(self, hook: str = "post-upgrade") -> Workload:
        def is_hook(o):
            hooks = (o["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
            return hook in [h.strip() for h in hooks.split(",")]
        job = self._one(self._find("Job", is_hook), f"Job with hook {hook}")
        return self._from_job(job["metadata"]["name"], job["spec"], "Job")

    def test_pod(self, name: str | None = None) -> Workload:
        pod = self._one(self._find("Pod", lambda o: (o["metadata"].get("annotations") or {})
                                   .get("helm.sh/hook") == "test" and name in (None, o["metadata"]["name"])),
                        "helm test Pod")
        meta = pod["metadata"]
        return Workload("Pod", meta["name"], meta["name"], pod["spec"], meta.get("labels") or {},
                        meta.get("annotations") or {}, pod["spec"].get("activeDeadlineSeconds"))

    def _from_job(self, job_name: str, job_spec: dict, kind: str) -> Workload:
        tmpl = job_spec["template"]
        meta = tmpl.get("metadata") or {}
        deadline = _min_deadline(job_spec.get("activeDeadlineSeconds"), tmpl["spec"].get("activeDeadlineSeconds"))
        return Workload(kind, job_name, f"{job_name}-{_suffix()}", tmpl["spec"], meta.get("labels") or {},
                        meta.get("annotations") or {}, deadline)

    # -- environment --

    def _get(self, kind: str, name: str) -> dict | None:
        for o in self._find(kind):
            ns = o["metadata"].get("namespace") or self.namespace
            if o["metadata"]["name"] == name and ns == self.namespace:
                return o
        return None

    def _data(self, kind: str, name: str) -> dict[str, str] | None:
        obj = self._get(kind, name)
        if obj is None:
            return None
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            data.update(obj.get("stringData") or {})   # what the API server would merge in
            return data
        data = dict(obj.get("data") or {})
        data.update({k: base64.b64decode(v).decode() for k, v in (obj.get("binaryData") or {}).items()})
        return data

    def _key_ref(self, kind: str, ref: dict) -> str | None:
        """secretKeyRef/configMapKeyRef: None when optional and absent; Kubernetes' errors otherwise."""
        name, key, optional = ref.get("name", ""), ref["key"], bool(ref.get("optional"))
        data = self._data(kind, name)
        if data is None:
            if optional:
                return None
            raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
        if key not in data:
            if optional:
                return None
            raise ContainerConfigError(f"couldn't find key {key} in {kind} {self.namespace}/{name}")
        return data[key]

    def _field_ref(self, path: str, wl: Workload) -> str:
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return (wl.labels if m[1] == "labels" else wl.annotations).get(m[2], "")
        values = {"metadata.name": wl.pod_name, "metadata.namespace": self.namespace,
                  "metadata.uid": f"uid-{wl.pod_name}",
                  "spec.serviceAccountName": wl.pod_spec.get("serviceAccountName", "default"),
                  "spec.nodeName": "localhost", "status.podIP": LOOPBACK, "status.hostIP": LOOPBACK}
        if path not in values:
            raise ContainerConfigError(f"unsupported fieldRef {path!r}")
        return values[path]

    def container_env(self, container: dict, wl: Workload) -> dict[str, str]:
        """The variables the kubelet gives the container (the image's ENV not included)."""
        env: dict[str, str] = {}
        for src in container.get("envFrom") or []:
            prefix = src.get("prefix", "")
            kind, ref = ("Secret", src["secretRef"]) if "secretRef" in src else ("ConfigMap", src["configMapRef"])
            data = self._data(kind, ref.get("name", ""))
            if data is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
            env.update({prefix + k: v for k, v in data.items()})
        for var in container.get("env") or []:
            name, src = var["name"], var.get("valueFrom")
            if not src:
                # Only variables defined before this one are visible to $(VAR).
                env[name] = expand(var.get("value", ""), env.get)
                continue
            if "secretKeyRef" in src:
                value = self._key_ref("Secret", src["secretKeyRef"])
            elif "configMapKeyRef" in src:
                value = self._key_ref("ConfigMap", src["configMapKeyRef"])
            elif "fieldRef" in src:
                value = self._field_ref(src["fieldRef"]["fieldPath"], wl)
            else:
                raise ContainerConfigError(f"unsupported valueFrom {sorted(src)} in {name}")
            if value is not None:
                env[name] = value
        return env

    # -- cluster DNS --

    def _dns_names(self, host: str) -> set[str]:
        svc, _, ns = host.lower().rstrip(".").partition(".")
        ns = ns or self.namespace
        names = {f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"}
        if ns == self.namespace:
            names.add(svc)
        return names

    def _route(self, host: str, port: int | None) -> int | None:
        return self.routes.get((host.lower().rstrip("."), port)) if port is not None else None

    _URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^@/]*@)?(?P<host>[^:/?#\[\]]+)"
                      r"(?::(?P<port>\d+))?(?P<rest>[/?#].*)?")
    _DEFAULT_PORTS = {"http": 80, "https": 443, "postgres": 5432, "postgresql": 5432}

    def resolve(self, value: str) -> str:
        """A URL or host:port naming a mapped service -> the same on loopback."""
        m = self._URL.fullmatch(value)
        if m:
            port = int(m["port"]) if m["port"] else self._DEFAULT_PORTS.get(m["scheme"][:-3].lower())
            target = self._route(m["host"], port)
            if target is not None:
                return f"{m['scheme']}{m['user'] or ''}{LOOPBACK}:{target}{m['rest'] or ''}"
            return value
        m = re.fullmatch(r"([A-Za-z0-9.-]+):(\d+)", value)
        if m and (target := self._route(m[1], int(m[2]))) is not None:
            return f"{LOOPBACK}:{target}"
        return value

    def resolve_env(self, env: dict[str, str]) -> dict[str, str]:
        out = {k: self.resolve(v) for k, v in env.items()}
        # Host and port in two variables (PGHOST/PGPORT, X_HOST/X_PORT).
        for name, host in env.items():
            if not name.endswith("HOST"):
                continue
            port_var = name[:-4] + "PORT"
            port = env.get(port_var) or ("5432" if name == "PGHOST" else "")
            if port.isdigit() and (target := self._route(host, int(port))) is not None:
                if name == "PGHOST":
                    # libpq connects to PGHOSTADDR and checks the certificate against PGHOST (verify-full),
                    # as in the cluster, where DNS resolves the name.
                    out["PGHOSTADDR"], out[port_var] = LOOPBACK, str(target)
                else:
                    out[name], out[port_var] = LOOPBACK, str(target)
        return out

    # -- running --

    def _image_env(self, scratch: dict[str, Path]) -> dict[str, str]:
        return {k: self._local_path(v, scratch) for k, v in self.image.env.items()}

    def _local_path(self, value: str, scratch: dict[str, Path]) -> str:
        """Image paths to their stand-ins here: /opt/venv -> .venv, emptyDir mounts -> scratch dirs."""
        parts = []
        for item in value.split(":"):
            # Map each image path once: a checkout that itself lies under /tmp must not
            # be moved again into the pod's /tmp emptyDir.
            if item == "/opt/venv" or item.startswith("/opt/venv/"):
                item = str(VENV) + item[len("/opt/venv"):]
            else:
                for mount, local in scratch.items():
                    if item == mount or item.startswith(mount.rstrip("/") + "/"):
                        item = str(local) + item[len(mount.rstrip("/")):]
                        break
            parts.append(item)
        return ":".join(parts)

    def run(self, wl: Workload, *, container: str | None = None, echo: Callable[[str], None] | None = None,
            timeout: float = 900) -> PodResult:
        """Run the container to its end. `timeout` only guards the caller against a hang."""
        containers = wl.pod_spec["containers"]
        c = containers[0] if container is None else next(x for x in containers if x["name"] == container)
        try:
            declared = self.container_env(c, wl)
        except ContainerConfigError as exc:
            return PodResult(wl, "CreateContainerConfigError", None, message=str(exc))

        with tempfile.TemporaryDirectory(prefix=f"pod-{wl.pod_name}-") as root:
            try:
                scratch = self._mounts(wl.pod_spec, c, Path(root))
            except ContainerConfigError as exc:
                return PodResult(wl, "CreateContainerConfigError", None, message=str(exc))
            env = {**self._image_env(scratch), "HOSTNAME": wl.pod_name,
                   # PATH and paths into the pod's volumes (a mounted key file) to their stand-ins here.
                   **{k: self._local_path(v, scratch) if k == "PATH" or v.startswith("/") else v
                      for k, v in declared.items()}}
            env = self.resolve_env(env)
            # The kubelet expands command/args with the declared variables only (not the image's).
            if c.get("command"):
                argv = [expand(a, declared.get) for a in c["command"]]
                argv += [expand(a, declared.get) for a in c.get("args") or []]
            else:
                argv = list(self.image.entrypoint)
                argv += [expand(a, declared.get) for a in c["args"]] if c.get("args") else list(self.image.cmd)
            argv = [self.resolve(a) for a in argv]
            exe = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH", ""))
            if not exe or not os.access(exe, os.X_OK):
                return PodResult(wl, "StartError", 128, argv=argv, env=env,
                                 message=f'exec: "{argv[0]}": executable file not found in $PATH')
            cwd = self._local_path(c.get("workingDir") or self.image.workdir, scratch)
            if not os.path.isdir(cwd):
                cwd = root
            return self._exec(wl, [exe, *argv[1:]], env, cwd, echo, timeout)

    def _mounts(self, spec: dict, c: dict, root: Path) -> dict[str, Path]:
        """Each mount of the container to a local directory: emptyDirs empty, Secret and
        ConfigMap volumes filled as the kubelet fills them."""
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        out = {}
        for m in c.get("volumeMounts") or []:
            vol = volumes.get(m["name"])
            if vol is None:
                raise ContainerConfigError(f"volumeMount {m['name']!r} names no volume of the pod")
            path = root / m["name"]
            path.mkdir(exist_ok=True)
            if "emptyDir" not in vol:
                self.fill_volume(vol, path, (spec.get("securityContext") or {}).get("fsGroup"))
            out[m["mountPath"]] = path
        return out

    def fill_volume(self, vol: dict, path: Path, fs_group: int | None) -> None:
        """Write a secret or configMap volume's files into `path`: its items (else every key),
        with the item's mode or the volume's defaultMode, group-owned by fsGroup. A missing
        object or key keeps the pod from starting, as Kubernetes' FailedMount does."""
        kind, source = ("Secret", vol["secret"]) if "secret" in vol else \
            ("ConfigMap", vol.get("configMap")) if "configMap" in vol else (None, None)
        if kind is None:
            raise ContainerConfigError(f"volume {vol['name']!r}: only emptyDir, secret and configMap volumes are run here")
        name = source.get("secretName") if kind == "Secret" else source.get("name")
        data = self._data(kind, name or "")
        if data is None:
            raise ContainerConfigError(f'MountVolume.SetUp failed for volume "{vol["name"]}" : '
                                       f'{kind.lower()} "{name}" not found')
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                raise ContainerConfigError(f'MountVolume.SetUp failed for volume "{vol["name"]}" : configmap '
                                           f'references non-existent config key: {item["key"]}' if kind == "ConfigMap"
                                           else f'MountVolume.SetUp failed for volume "{vol["name"]}" : '
                                           f'references non-existent secret key: {item["key"]}')
            target = path / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[item["key"]].encode())
            target.chmod(item.get("mode", source.get("defaultMode", 0o644)))
            if fs_group is not None and os.geteuid() == 0:
                os.chown(target, 0, fs_group)

    def _exec(self, wl, argv, env, cwd, echo, timeout) -> PodResult:
        start = time.monotonic()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        out: list[str] = []
        err: list[str] = []

        def pump(stream, sink):
            for line in stream:
                sink.append(line)
                if echo:
                    echo(line.rstrip("\n"))
        readers = [threading.Thread(target=pump, args=(proc.stdout, out), daemon=True),
                   threading.Thread(target=pump, args=(proc.stderr, err), daemon=True)]
        for t in readers:
            t.start()
        by_deadline = wl.deadline is not None and wl.deadline <= timeout
        limit = wl.deadline if by_deadline else timeout
        reason = ""
        try:
            proc.wait(limit)
        except subprocess.TimeoutExpired:
            # Past activeDeadlineSeconds the pod is deleted: SIGTERM, the grace period, SIGKILL.
            reason = "DeadlineExceeded" if by_deadline else "Timeout"
            grace = wl.pod_spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait()
        for t in readers:
            t.join(10)
        code = proc.returncode
        if code < 0:   # killed by a signal: a container reports 128 + signal number
            code = 128 - code
        reason = reason or ("Completed" if code == 0 else "Error")
        message = f"Job was active longer than specified deadline ({wl.deadline}s)" if reason == "DeadlineExceeded" else ""
        return PodResult(wl, reason, code, "".join(out), "".join(err), message, argv, env,
                         time.monotonic() - start)

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)   # the whole container: pg_dump and friends too
        except ProcessLookupError:
            pass
