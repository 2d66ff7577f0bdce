"""scripts/kind-e2e.sh, the real-cluster job of the ci workflow, in its dry run: every helm step
it takes (install, the restore upgrade, the upgrade back, the chart `ct install` installs) renders
with its exact flags."""

from __future__ import annotations

import os
import subprocess

from devkit.paths import REPO


def test_the_kind_job_s_helm_steps_render(helm):
    proc = subprocess.run([str(REPO / "scripts" / "kind-e2e.sh")], capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1", "HELM": helm})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": rendered") == 4 and "kind e2e (dry run): every helm step rendered" in proc.stdout
    assert "create job --from=cronjob/enclave-enclaveos-backup e2e-backup" in proc.stdout


def test_the_kind_script_is_shellcheck_clean():
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "shellcheck"), str(REPO / "scripts" / "kind-e2e.sh")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
