"""The PrometheusRule: every expression parses with a real PromQL parser (promql-parser, the
Rust port of Prometheus' parser) and selects this release's CronJobs and Jobs by the labels
kube-state-metrics gives them, and nothing of another release or namespace."""

from __future__ import annotations

import re

import promql_parser
import pytest

from .conftest import DOC_FLAGS, MANAGER_IMAGE, find, render

ON = "enclaveos-chart.Backup.Alerting.Enabled=true"
VERIFY = "enclaveos-chart.Verify.CronSchedule=0 3 * * 0"
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def rule_render(helm, *more, release="r1", namespace="apps"):
    return render(helm, *MANAGER_IMAGE, *DOC_FLAGS, *more, release=release,
                  extra=("--namespace", namespace) if namespace != "apps" else ())


def rules_of(objs) -> dict[str, dict]:
    rule = find(objs, "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    return {r["alert"]: r for r in group["rules"]}


def selectors(node):
    """Every vector selector in a parsed expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
    for attr in ("lhs", "rhs", "expr"):
        child = getattr(node, attr, None)
        if child is not None:
            yield from selectors(child)
    for arg in getattr(node, "args", None) or []:
        yield from selectors(arg)


def matches(selector, series: dict[str, str]) -> bool:
    """Prometheus' matcher semantics: a missing label is the empty string; regexes are anchored."""
    if selector.name and series.get("__name__") != selector.name:
        return False
    for m in selector.matchers.matchers:
        value = series.get(m.name, "")
        op = str(m.op).split(".")[-1]
        ok = {"Equal": value == m.value, "NotEqual": value != m.value,
              "Re": re.fullmatch(m.value, value) is not None,
              "NotRe": re.fullmatch(m.value, value) is None}[op]
        if not ok:
            return False
    return True


def ksm_series(release: str, namespace: str, component: str) -> list[dict[str, str]]:
    """The series kube-state-metrics exports for a CronJob and one Job it created
    (label names from kube-state-metrics' docs/metrics/workload/cronjob-metrics.md and job-metrics.md)."""
    cronjob = f"{release}-enclaveos-{component}"
    job = f"{cronjob}-29420640"  # the CronJob controller names Jobs <cronjob>-<scheduled minute>
    return [
        {"__name__": "kube_cronjob_status_last_successful_time", "namespace": namespace, "cronjob": cronjob},
        {"__name__": "kube_cronjob_created", "namespace": namespace, "cronjob": cronjob},
        {"__name__": "kube_job_status_start_time", "namespace": namespace, "job_name": job},
        {"__name__": "kube_job_status_failed", "namespace": namespace, "job_name": job, "reason": "BackoffLimitExceeded"},
        {"__name__": "kube_job_owner", "namespace": namespace, "job_name": job, "owner_kind": "CronJob",
         "owner_name": cronjob, "owner_is_controller": "true"},
    ]


def test_off_by_default(helm):
    assert not [o for o in rule_render(helm) if o["kind"] == "PrometheusRule"]


@pytest.mark.parametrize("release, namespace", [("r1", "apps"), ("prod", "enclave")])
def test_every_expression_parses_and_selects_this_releases_cronjobs_and_jobs(helm, release, namespace):
    objs = rule_render(helm, ON, VERIFY, release=release, namespace=namespace)
    rule = find(objs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and set(rule["spec"]) == {"groups"}
    rules = rules_of(objs)
    assert set(rules) == {"EnclaveBackupMissing", "EnclaveBackupJobFailed", "EnclaveBackupVerifyFailed"}
    cronjobs = {o["metadata"]["labels"]["app.kubernetes.io/component"]: o["metadata"]["name"]
                for o in objs if o["kind"] == "CronJob"}
    assert cronjobs == {"backup": f"{release}-enclaveos-backup", "verify": f"{release}-enclaveos-verify"}
    for name, rule in rules.items():
        component = "verify" if "Verify" in name else "backup"
        ours = ksm_series(release, namespace, component)
        theirs = (ksm_series("other", namespace, component) + ksm_series(release, "elsewhere", component)
                  + ksm_series(release, namespace, "verify" if component == "backup" else "backup"))
        found = list(selectors(promql_parser.parse(rule["expr"])))
        assert found, name
        for selector in found:
            assert any(matches(selector, s) for s in ours), f"{name}: {selector} selects none of this release's series"
            leaks = [s for s in theirs if matches(selector, s)]
            # Job metrics are filtered by namespace only, then joined to kube_job_owner of our CronJob.
            if selector.name in ("kube_job_status_start_time", "kube_job_status_failed"):
                assert all(s["namespace"] == namespace for s in leaks), f"{name}: {selector}"
            else:
                assert leaks == [], f"{name}: {selector} also selects {leaks}"
        # The fields the Prometheus Operator's Rule type has (its CRD rejects any other).
        assert set(rule) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
        assert DURATION.match(rule["for"])
        assert rule["labels"] == {"severity": "warning"}
        assert {"summary", "description", "runbook"} <= set(rule["annotations"])
        assert all(isinstance(v, str) for v in rule["annotations"].values())


def test_job_alerts_are_joined_to_this_cronjobs_jobs(helm):
    rules = rules_of(rule_render(helm, ON, VERIFY))
    for name, cronjob in (("EnclaveBackupJobFailed", "r1-enclaveos-backup"),
                          ("EnclaveBackupVerifyFailed", "r1-enclaveos-verify")):
        owners = [s for s in selectors(promql_parser.parse(rules[name]["expr"])) if s.name == "kube_job_owner"]
        assert len(owners) == 1
        assert {(m.name, m.value) for m in owners[0].matchers.matchers} == {
            ("namespace", "apps"), ("owner_kind", "CronJob"), ("owner_name", cronjob)}


def test_incremental_backups_have_their_failed_job_alert(helm):
    rules = rules_of(rule_render(helm, ON, "enclaveos-chart.Backup.Method=native",
                                 "enclaveos-chart.Backup.IncrementalSchedule=0 1-23 * * *"))
    assert set(rules) == {"EnclaveBackupMissing", "EnclaveBackupJobFailed", "EnclaveBackupIncrementalJobFailed"}
    owners = [s for s in selectors(promql_parser.parse(rules["EnclaveBackupIncrementalJobFailed"]["expr"]))
              if s.name == "kube_job_owner"]
    assert {(m.name, m.value) for m in owners[0].matchers.matchers} == {
        ("namespace", "apps"), ("owner_kind", "CronJob"), ("owner_name", "r1-enclaveos-backup-incremental")}


@pytest.mark.parametrize("schedule, interval", [
    ("0 0 * * *", 86400), ("@daily", 86400), ("@hourly", 3600), ("*/15 * * * *", 3600),
    ("30 */6 * * *", 21600), ("0 2 * * 1", 604800), ("0 0 1 * *", 2678400), ("@weekly", 604800),
])
def test_missing_backup_threshold_is_derived_from_the_schedule(helm, schedule, interval):
    rules = rules_of(rule_render(helm, ON, f"enclaveos-chart.Backup.CronSchedule={schedule}"))
    expr = rules["EnclaveBackupMissing"]["expr"]
    threshold = interval + 3600 + 21600  # + StartingDeadlineSeconds + ActiveDeadlineSeconds
    assert re.findall(r"> (\d+)", expr) == [str(threshold)] * 2
    assert "EnclaveBackupVerifyFailed" not in rules  # no verify CronJob, no verify alert


def test_threshold_labels_for_and_severity_can_be_set(helm):
    objs = rule_render(helm, ON, "enclaveos-chart.Backup.Alerting.MaxAgeSeconds=7200",
                       "enclaveos-chart.Backup.Alerting.Labels.release=kube-prometheus-stack",
                       "enclaveos-chart.Backup.Alerting.For=30m", "enclaveos-chart.Backup.Alerting.Severity=critical")
    rule = find(objs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    missing = rules_of(objs)["EnclaveBackupMissing"]
    assert re.findall(r"> (\d+)", missing["expr"]) == ["7200", "7200"]
    assert missing["for"] == "30m" and missing["labels"] == {"severity": "critical"}


def test_annotations_keep_prometheus_templates_for_prometheus(helm):
    rules = rules_of(rule_render(helm, ON))
    assert "{{ $labels.job_name }}" in rules["EnclaveBackupJobFailed"]["annotations"]["summary"]
    assert "{{ $value | humanizeDuration }}" in rules["EnclaveBackupMissing"]["annotations"]["description"]


def test_a_bad_for_duration_is_refused(helm):
    from .conftest import render_error
    err = render_error(helm, *MANAGER_IMAGE, *DOC_FLAGS, ON, "enclaveos-chart.Backup.Alerting.For=ten minutes")
    assert "For" in err
