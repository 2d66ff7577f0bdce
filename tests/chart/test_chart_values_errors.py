"""Bad values fail `helm template`/`install` with the chart's own message, naming the value and the
fix, on Helm 3 and Helm 4 alike: cross-value rules, cron ranges, IANA zones, endpoint schemes."""

from __future__ import annotations

import re

import pytest

from tests.chart.conftest import DOC_FLAGS, MANAGER_IMAGE, SUBCHART, render, render_error

SUB = "enclaveos-chart."
ZONES = SUBCHART / "files" / "timezones.txt"


def _without(flags, prefix):
    return tuple(f for f in flags if not f.startswith(prefix))


@pytest.mark.parametrize("dropped,because", [
    ("global.S3.HmacSecretName=", "enclaveos-chart.Backup.CronSchedule is set"),
    ("global.S3.Bucket=", "enclaveos-chart.Backup.CronSchedule is set"),
    ("global.S3.Endpoint=", "enclaveos-chart.Backup.CronSchedule is set"),
])
def test_a_missing_value_a_backup_needs_is_named(helm, dropped, because):
    error = render_error(helm, *_without(DOC_FLAGS, dropped), *MANAGER_IMAGE)
    name = dropped.rstrip("=")
    assert f"{name} is required because {because}" in error, error
    assert "allOf" not in error and "Must validate" not in error  # no schema jargon


def test_every_rule_between_values_is_the_chart_s_own_message(helm):
    no_s3 = _without(_without(_without(DOC_FLAGS, "global.S3."), f"{SUB}Backup.CronSchedule"), "x")
    for sets, says in [
        ((f"{SUB}restore.fromObject=latest",), "global.S3.Endpoint is required because enclaveos-chart.restore.fromObject is set"),
        ((f"{SUB}Verify.CronSchedule=0 4 * * 0",), "global.S3.Endpoint is required because enclaveos-chart.Verify.CronSchedule is set"),
        ((f"{SUB}Verify.HelmTest=true",), "global.S3.Endpoint is required because enclaveos-chart.Verify.HelmTest is set"),
        ((f"{SUB}cockroachdb.enabled=false",), "enclaveos-chart.externalDatabase.host is required when enclaveos-chart.cockroachdb.enabled is false"),
    ]:
        error = render_error(helm, *no_s3, *MANAGER_IMAGE, *sets)
        assert says in error and "allOf" not in error and "Must validate" not in error, error


@pytest.mark.parametrize("schedule,says", [
    ("61 25 * * *", 'minute 61 is out of range 0-59'),
    ("0 25 * * *", 'hour 25 is out of range 0-23'),
    ("0 0 0 * *", 'day of month 0 is out of range 1-31'),
    ("0 0 * 13 *", 'month 13 is out of range 1-12'),
    ("0 0 * * 7", 'day of week 7 is out of range 0-6'),
    ("0 0 * *", 'has 4 fields'),
    ("0 0 * * * *", 'has 6 fields'),
    ("30-10 * * * *", 'the minute range 30-10 ends before it starts'),
    ("*/0 * * * *", 'a step of 0 in the minute field'),
    ("0 ? * * *", '"?" is not a hour'),
    ("0 0 * * fri-mon", 'the day of week range fri-mon ends before it starts'),
    ("0 0 L * *", '"l" is not a day of month'),
    ("@every 1h", 'has 2 fields'),
])
def test_a_schedule_out_of_range_is_refused_naming_the_field(helm, schedule, says):
    for value in ("Backup.CronSchedule", "Verify.CronSchedule"):
        error = render_error(helm, *_without(DOC_FLAGS, f"{SUB}Backup.CronSchedule"), *MANAGER_IMAGE,
                             f"{SUB}{value}={schedule}")
        assert f'{SUB}{value}="{schedule}"' in error and says in error, error
        assert "five fields" in error or "out of range" in error or "ends before" in error or "step of 0" in error


@pytest.mark.parametrize("schedule", ["0 0 * * *", "*/15 2-4,22 1,15 jan-mar,DEC mon-fri", "5 4 ? * sun",
                                      "0 0 1/2 * *", "@daily", "@hourly", "0  3  *  *  *"])
def test_schedules_the_cronjob_controller_takes_pass(helm, schedule):
    escaped = schedule.replace(",", "\\,")  # --set splits at commas
    objs = render(helm, *_without(DOC_FLAGS, f"{SUB}Backup.CronSchedule"), *MANAGER_IMAGE,
                  f"{SUB}Backup.CronSchedule={escaped}")
    assert [o["spec"]["schedule"] for o in objs if o["kind"] == "CronJob"] == [schedule]


@pytest.mark.parametrize("zone,ok", [("Europe/Berlin", True), ("Etc/UTC", True), ("America/Argentina/Buenos_Aires", True),
                                     ("Europe/Berlinn", False), ("CET+1", False), ("Local", False)])
def test_time_zones_come_from_the_iana_database(helm, zone, ok):
    sets = (*DOC_FLAGS, *MANAGER_IMAGE, f"{SUB}Backup.TimeZone={zone}")
    if ok:
        assert [o["spec"]["timeZone"] for o in render(helm, *sets) if o["kind"] == "CronJob"] == [zone]
    else:
        error = render_error(helm, *sets)
        assert f'{SUB}Backup.TimeZone="{zone}" is not a time zone of the IANA database' in error, error


def test_the_zone_list_is_the_pinned_tzdata_package_s():
    from importlib import resources
    shipped = set(resources.files("tzdata").joinpath("zones").read_text().split())
    assert set(ZONES.read_text().split()) == shipped, "run scripts/gen-timezones.py"


@pytest.mark.parametrize("endpoint,says", [
    ("ftp://x", "the S3 API is spoken over http:// or https:// only"),
    ("s3://bucket", "the S3 API is spoken over http:// or https:// only"),
    ("https://", "the S3 API is spoken over http:// or https:// only"),
    ("host name with spaces", "is not a URL or host name"),
])
def test_an_endpoint_that_is_not_http_is_refused(helm, endpoint, says):
    error = render_error(helm, *_without(DOC_FLAGS, "global.S3.Endpoint="), *MANAGER_IMAGE,
                         f"global.S3.Endpoint={endpoint}")
    assert f'global.S3.Endpoint="{endpoint}"' in error and says in error, error


@pytest.mark.parametrize("endpoint", ["https://s3.eu-de.cloud-object-storage.appdomain.cloud", "http://minio.storage:9000",
                                      "s3.eu-de.cloud-object-storage.appdomain.cloud", "https://10.0.0.5:9000/",
                                      "http://[fd00::1]:9000"])
def test_endpoints_users_give_pass(helm, endpoint):
    render(helm, *_without(DOC_FLAGS, "global.S3.Endpoint="), *MANAGER_IMAGE, f"global.S3.Endpoint={endpoint}")


@pytest.mark.parametrize("value", ["global.S3.HmacSecretName", f"{SUB}Backup.Signing.SecretName",
                                   f"{SUB}externalDatabase.existingSecret"])
def test_a_secret_name_that_is_not_dns_1123_is_named(helm, value):
    error = render_error(helm, *_without(DOC_FLAGS, value + "="), *MANAGER_IMAGE, f"{value}=Bad_Name")
    # The schema reports it under the chart it belongs to: "enclaveos-chart:" then the value's path.
    relative = value.removeprefix(SUB)
    chart = "enclaveos-chart:" if value.startswith(SUB) else "data-shield:"
    assert chart in error and re.search(rf"{re.escape(relative)}|/{re.escape(relative.replace('.', '/'))}", error), error
