"""Every rendered object validates strictly against the Kubernetes API schemas.

Oldest supported Kubernetes: 1.27 (CronJob.spec.timeZone is stable from 1.27; the
charts declare kubeVersion >=1.27.0-0). Newest: the newest schemas kubernetes-validate has.
"""

from __future__ import annotations

import pytest
import kubernetes_validate

from .conftest import CI_VALUES, SUB_CI_VALUES, UMBRELLA, HelmError, render

OLDEST = "1.27.0"
NEWEST = kubernetes_validate.latest_version()


@pytest.mark.parametrize("values", CI_VALUES + SUB_CI_VALUES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
@pytest.mark.parametrize("kube", [OLDEST, NEWEST])
def test_rendered_objects_validate_strictly(helm, values, kube):
    chart = values.parent.parent
    objs = render(helm, files=[values], chart=chart, extra=("--kube-version", kube))
    assert objs
    errors = []
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, kube, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} at {path}: {e.message}")
    assert errors == []


def test_newest_schema_is_newer_than_oldest():
    assert tuple(map(int, NEWEST.split("."))) > (1, 27, 0)


def test_kubernetes_older_than_oldest_supported_is_refused(helm):
    with pytest.raises(HelmError) as err:
        render(helm, files=[CI_VALUES[0]], chart=UMBRELLA, extra=("--kube-version", "1.26.0"))
    assert "kubeVersion" in err.value.stderr or "incompatible" in err.value.stderr
