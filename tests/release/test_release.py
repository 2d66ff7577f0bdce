"""The release pipeline: workflows lint clean, and the chart, the image and the versions agree."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from devkit.pgserver import SUPPORTED_MAJORS
from devkit.release import RELEASE, render

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
SUBCHART = REPO / "charts" / "data-shield" / "charts" / "enclaveos-chart"


def release_workflow() -> dict:
    return yaml.safe_load((WORKFLOWS / "release.yml").read_text())


def package_version() -> str:
    text = (REPO / "image" / "src" / "enclave_backup" / "__init__.py").read_text()
    return re.search(r'^__version__ = "(.+)"$', text, re.M)[1]


def default_backup_repository() -> str:
    return yaml.safe_load((SUBCHART / "values.yaml").read_text())["Backup"]["Image"]["Repository"]


def release_check(root: Path, tag: str, owner: str) -> subprocess.CompletedProcess:
    env = release_workflow()["env"]
    return subprocess.run([str(root / "scripts" / "release-check.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "GITHUB_REF_NAME": tag, "GITHUB_REPOSITORY_OWNER": owner,
                               "REGISTRY": env["REGISTRY"], "IMAGE_NAME": env["IMAGE_NAME"]})


def outputs(proc: subprocess.CompletedProcess) -> dict[str, str]:
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


BIN = REPO / ".venv" / "bin"


def test_workflows_are_actionlint_clean():
    assert (BIN / "actionlint").exists() and (BIN / "shellcheck").exists(), \
        "actionlint or shellcheck not found: install requirements-dev.txt into .venv"
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} == {"ci.yml", "release.yml"}
    # With shellcheck on PATH, actionlint checks the workflows' run: scripts too.
    proc = subprocess.run([str(BIN / "actionlint"), "-no-color", *map(str, files)], capture_output=True, text=True,
                          cwd=REPO, env={"PATH": f"{BIN}:/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflows_and_dependabot_are_zizmor_clean():
    # Offline: the audits that need GitHub's API (e.g. known-vulnerable actions) run in GitHub.
    proc = subprocess.run([str(BIN / "zizmor"), "--offline", "--no-progress", str(REPO / ".github")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "No findings" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_every_action_is_pinned_by_commit_and_every_job_asks_for_its_permissions():
    for path in sorted(WORKFLOWS.glob("*.yml")):
        workflow = yaml.safe_load(path.read_text())
        assert workflow["permissions"] == {}, path.name
        for name, job in workflow["jobs"].items():
            assert "permissions" in job, f"{path.name}: job {name}"
            for step in job["steps"]:
                if "uses" in step:
                    assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
                # Expressions reach run: scripts only through env (no template injection).
                assert "${{" not in step.get("run", ""), f"{path.name}: {step.get('name', step.get('uses'))}"
        for line in path.read_text().splitlines():
            if "uses:" in line:
                assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), line  # the version, for readers


def test_build_and_release_scripts_are_shellcheck_clean():
    scripts = [REPO / "image" / "install-pg-dump.sh",
               *(REPO / "scripts" / f"{n}.sh" for n in ("build-image", "release-check", "release-notes", "set-version"))]
    proc = subprocess.run([str(BIN / "shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ci_workflow_runs_the_readme_test_command():
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    runs = [s.get("run", "") for s in ci["jobs"]["test"]["steps"]]
    assert "scripts/test.sh" in runs
    assert "scripts/test.sh" in (REPO / "README.md").read_text() and "scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_release_pushes_what_the_chart_defaults_to():
    version = package_version()
    repository = default_backup_repository()
    m = re.fullmatch(r"ghcr\.io/([a-z0-9-]+)/([a-z0-9-]+)", repository)
    assert m, repository
    owner = m[1]
    proc = release_check(REPO, f"v{version}", owner)
    assert proc.returncode == 0, proc.stderr
    out = outputs(proc)
    assert out == {"version": version, "image": repository, "chart-repository": f"ghcr.io/{owner}/charts"}
    # GitHub owners may have capitals; registry paths are lower case.
    assert outputs(release_check(REPO, f"v{version}", owner.upper()))["image"] == repository

    steps = {s.get("id"): s for s in release_workflow()["jobs"]["release"]["steps"] if s.get("id")}
    build = steps["build"]["with"]
    assert build["tags"] == "${{ steps.meta.outputs.image }}:${{ steps.meta.outputs.version }}"
    assert build["platforms"] == "linux/amd64,linux/arm64" and build["sbom"] is True and build["context"] == "image"
    assert build["provenance"] == "mode=max"

    # The image reference the chart renders by default is exactly the one pushed.
    objects = render("helm4", "https://s3.example.com", "nightly")
    cronjob = next(o for o in objects if o["kind"] == "CronJob" and o["metadata"]["name"] == f"{RELEASE}-enclaveos-backup")
    image = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{out['image']}:{out['version']}"


def test_release_refuses_a_foreign_owner_or_a_wrong_tag():
    version = package_version()
    owner = default_backup_repository().split("/")[1]
    fork = release_check(REPO, f"v{version}", "someone-else")
    assert fork.returncode == 1 and "default Backup.Image.Repository" in fork.stderr
    tag = release_check(REPO, "v99.0.0", owner)
    assert tag.returncode == 1 and f"is not v{version}" in tag.stderr


def test_one_version_everywhere():
    version = package_version()
    pyproject = (REPO / "image" / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'version = {attr = "enclave_backup.__version__"}' in pyproject
    umbrella = yaml.safe_load((REPO / "charts" / "data-shield" / "Chart.yaml").read_text())
    sub = yaml.safe_load((SUBCHART / "Chart.yaml").read_text())
    assert umbrella["version"] == umbrella["appVersion"] == sub["version"] == sub["appVersion"] == version
    assert [d["version"] for d in umbrella["dependencies"] if d["name"] == "enclaveos-chart"] == [version]
    notes = subprocess.run([str(REPO / "scripts" / "release-notes.sh"), version], capture_output=True, text=True)
    assert notes.returncode == 0 and notes.stdout.strip(), notes.stderr


def test_set_version_moves_every_place_together(tmp_path):
    for part in ("scripts", "charts", "CHANGELOG.md", "image/src/enclave_backup/__init__.py"):
        src, dst = REPO / part, tmp_path / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    proc = subprocess.run([str(tmp_path / "scripts" / "set-version.sh"), "2.3.4"], capture_output=True, text=True)
    assert proc.returncode == 0 and "add a '## [2.3.4] - <date>' section" in proc.stderr, proc.stderr
    owner = default_backup_repository().split("/")[1]
    missing_notes = release_check(tmp_path, "v2.3.4", owner)
    assert missing_notes.returncode == 1 and "CHANGELOG.md has no section for 2.3.4" in missing_notes.stderr
    changelog = tmp_path / "CHANGELOG.md"
    # Above the newest released section, whatever [Unreleased] holds today.
    changelog.write_text(re.sub(r"(?m)^(## \[\d)", "## [2.3.4] - 2027-01-01\n\n- Fixes.\n\n\\1",
                                changelog.read_text(), count=1))
    assert outputs(release_check(tmp_path, "v2.3.4", owner))["version"] == "2.3.4"
    assert subprocess.run([str(tmp_path / "scripts" / "release-notes.sh"), "2.3.4"], capture_output=True,
                          text=True).stdout.strip() == "- Fixes."


def _locked(path: Path) -> dict[str, list[tuple[str, list[str]]]]:
    """name -> [(version, hashes)] of a pip requirements file with --hash options."""
    text = path.read_text().replace("\\\n", " ")
    out: dict[str, list] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"([A-Za-z0-9_.-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)\s*$", line)
        assert m, f"{path.name}: not an exact pin with hashes: {line}"
        out.setdefault(m[1].lower(), []).append((m[2], re.findall(r"sha256:([0-9a-f]{64})", m[3])))
    return out


def test_python_lock_pins_every_package_by_hash():
    locked = _locked(REPO / "image" / "requirements.lock")
    assert all(hashes for pins in locked.values() for _, hashes in pins)
    declared = re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^"]+)"',
                          (REPO / "image" / "pyproject.toml").read_text())
    assert declared
    for name, version in declared:
        assert [v for v, _ in locked.get(name.lower(), [])] == [version], f"{name}: pyproject {version}, lock {locked.get(name.lower())}"
    assert "setuptools" in locked   # the build backend too: the image build uses no unpinned package


@pytest.mark.parametrize("lock", ["pg_dump.lock"])
def test_pg_dump_lock_has_every_major_for_both_architectures(lock):
    locked = _locked(REPO / "image" / lock)
    majors = sorted(int(v.split(".")[0]) for pins in locked.values() for v, _ in pins)
    assert majors == list(SUPPORTED_MAJORS)
    assert all(len(hashes) == 2 for pins in locked.values() for _, hashes in pins)   # amd64 and arm64
