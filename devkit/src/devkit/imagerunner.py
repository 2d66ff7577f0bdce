"""Run a rendered pod's container from the built image with podman, as the kubelet would.

Environment, `$(VAR)` expansion, Secret lookups and service names come from PodRunner
(devkit.podrunner); this adds what running from the virtualenv leaves out: the image
itself (its ENV, PATH and files), the pod's security context (user and group, read-only
root filesystem, capabilities, no-new-privileges, seccomp), its emptyDir, Secret and ConfigMap volumes, its
memory and CPU limits, and PID 1 receiving the signals. The network is the host's, so the
loopback test servers are reachable at the addresses PodRunner maps services to.

Not emulated: emptyDir size limits (the kubelet enforces them by eviction), other volume
types, probes, Job retries.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .paths import TOOLS
from .podrunner import DEFAULT_GRACE_SECONDS, ContainerConfigError, PodResult, PodRunner, Workload, expand

CONTAINERS_CONF = TOOLS / "containers.conf"   # written by scripts/build-image.sh

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|m)?$")
_FACTORS = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True, check=check,
                          timeout=timeout)


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (512Mi, 1G, 134217728) in bytes."""
    m = _QUANTITY.match(str(quantity))
    if not m or m[2] == "m":
        raise ContainerConfigError(f"unsupported memory quantity {quantity!r}")
    return int(float(m[1]) * _FACTORS[m[2]])


def cpus(quantity: str) -> str:
    q = str(quantity)
    return str(int(q[:-1]) / 1000) if q.endswith("m") else q


@dataclass
class Running:
    """A started container: its logs as they come, signals to PID 1, then its result."""
    name: str
    workload: Workload
    proc: subprocess.Popen
    argv: list[str]
    env: dict[str, str]
    scratch: tempfile.TemporaryDirectory
    grace: float
    started: float = field(default_factory=time.monotonic)
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._readers = [threading.Thread(target=self._pump, args=(s, sink), daemon=True)
                         for s, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _pump(stream, sink):
        for line in stream:
            sink.append(line)

    def pid1_cmdline(self) -> list[str]:
        raw = podman("exec", self.name, "cat", "/proc/1/cmdline").stdout
        return [a for a in raw.split("\0") if a]

    def kill(self, signal_name: str) -> None:
        """What the kubelet's container runtime does: the signal goes to the container's PID 1."""
        podman("kill", "--signal", signal_name, self.name)

    def wait(self, timeout: float | None = None, reason: str = "") -> PodResult:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Past activeDeadlineSeconds the pod is deleted: SIGTERM, the grace period, SIGKILL.
            reason = reason or "Timeout"
            podman("stop", "--time", str(int(self.grace)), self.name, timeout=self.grace + 60)
            self.proc.wait(60)
        for t in self._readers:
            t.join(10)
        state = json.loads(podman("inspect", "--format", "{{json .State}}", self.name).stdout)
        podman("rm", "--force", self.name, check=False)
        self.scratch.cleanup()
        code = state["ExitCode"]
        if state.get("OOMKilled"):
            reason = "OOMKilled"
        reason = reason or ("Completed" if code == 0 else "Error")
        message = (f"Job was active longer than specified deadline ({self.workload.deadline}s)"
                   if reason == "DeadlineExceeded" else "")
        return PodResult(self.workload, reason, code, "".join(self.out), "".join(self.err), message,
                         self.argv, self.env, time.monotonic() - self.started)


class ImagePodRunner(PodRunner):
    """PodRunner whose containers run from their image, under podman."""

    def run(self, wl: Workload, *, container: str | None = None, echo=None, timeout: float = 900) -> PodResult:
        try:
            running = self.start(wl, container=container)
        except ContainerConfigError as exc:
            return PodResult(wl, "CreateContainerConfigError", None, message=str(exc))
        by_deadline = wl.deadline is not None and wl.deadline <= timeout
        return running.wait(wl.deadline if by_deadline else timeout, "DeadlineExceeded" if by_deadline else "")

    def start(self, wl: Workload, *, container: str | None = None) -> Running:
        containers = wl.pod_spec["containers"]
        c = containers[0] if container is None else next(x for x in containers if x["name"] == container)
        declared = self.container_env(c, wl)
        env = self.resolve_env(declared)
        for k, v in env.items():
            if "\n" in v:
                raise ContainerConfigError(f"env {k}: values with newlines cannot be passed to podman")
        scratch = tempfile.TemporaryDirectory(prefix=f"pod-{wl.pod_name}-")
        root = Path(scratch.name)
        name = f"{wl.pod_name}-{uuid.uuid4().hex[:6]}"
        try:
            opts = ["--name", name, "--hostname", wl.pod_name, "--network", "host", "--pull", "never",
                    *self._security(wl.pod_spec, c), *self._resources(c), *self._volumes(wl.pod_spec, c, root)]
        except ContainerConfigError:
            scratch.cleanup()
            raise
        # Values stay out of the command line (and so out of ps): a file only root can read.
        env_file = root / "env"
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        opts += ["--env-file", str(env_file)]
        if c.get("workingDir"):
            opts += ["--workdir", c["workingDir"]]
        # The kubelet expands command/args with the declared variables; command replaces the
        # image's ENTRYPOINT, args its CMD.
        args = [self.resolve(expand(a, declared.get)) for a in c.get("args") or []]
        shown = list(self.image.entrypoint) + (args or list(self.image.cmd))
        if c.get("command"):
            command = [self.resolve(expand(a, declared.get)) for a in c["command"]]
            opts += ["--entrypoint", json.dumps(command)]
            shown = command + args
        argv = ["podman", "run", *opts, c["image"], *args]
        # In the scratch directory: conmon leaves a file named "oom" in its working directory.
        proc = subprocess.Popen(argv, env=podman_env(), cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        grace = wl.pod_spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        running = Running(name, wl, proc, shown, env, scratch, grace)
        self._wait_started(running)
        return running

    @staticmethod
    def _wait_started(running: Running, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = podman("inspect", "--format", "{{.State.Status}}", running.name, check=False)
            if probe.returncode == 0 and probe.stdout.strip() in ("running", "exited", "stopped"):
                return
            if running.proc.poll() is not None:
                return
            time.sleep(0.05)
        raise RuntimeError(f"container {running.name} did not start")

    @staticmethod
    def _security(spec: dict, c: dict) -> list[str]:
        pod, ctr = spec.get("securityContext") or {}, c.get("securityContext") or {}
        merged = {**pod, **ctr}   # the container's settings win, field by field
        opts = []
        user, group = merged.get("runAsUser"), merged.get("runAsGroup")
        if merged.get("runAsNonRoot"):
            # The kubelet's check: the user must be known to be non-zero, from the pod or the image.
            image_user = podman("inspect", "--format", "{{.Config.User}}", c["image"]).stdout.strip()
            uid = str(user) if user is not None else image_user.split(":")[0]
            if not uid.isdigit() or int(uid) == 0:
                raise ContainerConfigError(f"container has runAsNonRoot and image has non-numeric user ({uid}), "
                                           "cannot verify user is non-root" if not uid.isdigit() else
                                           "container's runAsUser breaks non-root policy")
        if user is not None:
            opts += ["--user", f"{user}:{group}" if group is not None else str(user)]
        for gid in [*(pod.get("supplementalGroups") or []), *([pod["fsGroup"]] if "fsGroup" in pod else [])]:
            opts += ["--group-add", str(gid)]
        if ctr.get("readOnlyRootFilesystem"):
            # Without podman's extra tmpfs mounts: only the pod's volumes are writable.
            opts += ["--read-only", "--read-only-tmpfs=false"]
        if ctr.get("allowPrivilegeEscalation") is False:
            opts += ["--security-opt", "no-new-privileges"]
        if ctr.get("privileged"):
            opts += ["--privileged"]
        caps = ctr.get("capabilities") or {}
        opts += [a for cap in caps.get("drop") or [] for a in ("--cap-drop", cap)]
        opts += [a for cap in caps.get("add") or [] for a in ("--cap-add", cap)]
        seccomp = (merged.get("seccompProfile") or {}).get("type", "RuntimeDefault")
        if seccomp == "Unconfined":
            opts += ["--security-opt", "seccomp=unconfined"]
        elif seccomp != "RuntimeDefault":
            raise ContainerConfigError(f"unsupported seccompProfile {seccomp}")
        return opts

    @staticmethod
    def _resources(c: dict) -> list[str]:
        limits = (c.get("resources") or {}).get("limits") or {}
        opts = []
        if "memory" in limits:
            limit = memory_bytes(limits["memory"])
            # Kubernetes nodes run without swap: the limit is the memory the container gets.
            opts += ["--memory", str(limit), "--memory-swap", str(limit)]
        if "cpu" in limits:
            opts += ["--cpus", cpus(limits["cpu"])]
        return opts

    def _volumes(self, spec: dict, c: dict, root: Path) -> list[str]:
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        opts = []
        for m in c.get("volumeMounts") or []:
            vol = volumes.get(m["name"])
            if vol is None:
                raise ContainerConfigError(f"volumeMount {m['name']!r} names no volume of the pod")
            if "emptyDir" not in vol:
                # Secret and ConfigMap files: written here as the kubelet writes them, always read-only.
                path = root / "volumes" / m["name"]
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o755)
                self.fill_volume(vol, path, (spec.get("securityContext") or {}).get("fsGroup"))
                opts += ["--volume", f"{path}:{m['mountPath']}:ro"]
                continue
            if (vol["emptyDir"] or {}).get("medium") == "Memory":
                opts += ["--tmpfs", f"{m['mountPath']}:rw,mode=1777"]
                continue
            # The kubelet makes emptyDir directories world-writable (0777).
            path = root / "volumes" / m["name"]
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
            mode = "ro" if m.get("readOnly") else "rw"
            opts += ["--volume", f"{path}:{m['mountPath']}:{mode}"]
        return opts
