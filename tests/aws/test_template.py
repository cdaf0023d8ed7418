"""aws/template.yaml: cfn-lint passes on it (and fails on a broken copy), and it agrees with the
code — the ledger table `create_table` makes, the handlers, the variables, the API's routes,
the queue's timeouts and the alarms' metrics. Each structural check is also shown failing on
a mutated copy of the template."""

from __future__ import annotations

import copy
import importlib
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode.cfn_yaml import load

import logwatchd.aws
from logwatchd.aws import settings as aws_settings
from logwatchd.aws.settings import Settings
from logwatchd.openapi import LAMBDA_PATHS
from logwatchd.webapp import DOCS_ASSETS

from .conftest import AwsEnv

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "aws" / "template.yaml"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"
HANDLERS = {"logwatchd.aws.lambda_handler", "logwatchd.aws.api_handler", "logwatchd.aws.compact_handler"}

Template = dict[str, Any]


@pytest.fixture(scope="module")
def template() -> Template:
    return load(str(TEMPLATE))


def resources(t: Template, kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in t["Resources"].items() if r["Type"] == kind}


def function_property(t: Template, name: str, prop: str) -> Any:
    """A function's property, or the Globals' value SAM would merge in."""
    props = t["Resources"][name]["Properties"]
    return props[prop] if prop in props else t.get("Globals", {}).get("Function", {}).get(prop)


def handler_of(t: Template, name: str) -> str:
    props = t["Resources"][name]["Properties"]
    if props.get("PackageType") == "Image":
        return str(props["ImageConfig"]["Command"][0])
    return str(props["Handler"])


def function_with_handler(t: Template, handler: str) -> str:
    [name] = [n for n in resources(t, "AWS::Serverless::Function") if handler_of(t, n) == handler]
    return name


def _set(path: list[Any], value: Any) -> Callable[[Template], None]:
    def mutate(t: Template) -> None:
        node = t
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CFN_LINT), str(path)], capture_output=True, text=True,
                          timeout=120, check=False)


# --- cfn-lint ----------------------------------------------------------------------------------
def test_cfn_lint_passes() -> None:
    """cfn-lint (pinned) finds no error and no warning in the template."""
    out = cfn_lint(TEMPLATE)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("old, new, code", [
    ("      VisibilityTimeout: 5400", "      VisibilityTimout: 5400", "E3002"),      # a typo
    ("Value: !GetAtt DeadLetterQueue.QueueName", "Value: !GetAtt DeadLetterQueu.QueueName",
     "E1010"),                                                                   # a dangling reference
    ("      BillingMode: PAY_PER_REQUEST", "      BillingMode: ON_DEMAND", "E3030"),  # a bad value
])
def test_cfn_lint_fails_on_a_broken_copy(tmp_path: Path, old: str, new: str, code: str) -> None:
    """The lint step is not a formality: a typo, a dangling !GetAtt or a bad value fails it."""
    text = TEMPLATE.read_text()
    assert text.count(old) == 1, old
    broken = tmp_path / "template.yaml"
    broken.write_text(text.replace(old, new))
    out = cfn_lint(broken)
    assert out.returncode != 0 and code in out.stdout, out.stdout + out.stderr


PSEUDO = {"AWS::AccountId", "AWS::NotificationARNs", "AWS::NoValue", "AWS::Partition",
          "AWS::Region", "AWS::StackId", "AWS::StackName", "AWS::URLSuffix"}


def dangling_references(t: Template) -> list[str]:
    """Every Ref, GetAtt and ${...} of Fn::Sub that names nothing: cfn-lint checks these in
    plain resources only, not inside SAM resources' events and policies."""
    known = set(t["Resources"]) | set(t.get("Parameters", {})) | PSEUDO
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "Ref" in node and node["Ref"] not in known:
                found.append(f"Ref {node['Ref']}")
            if "Fn::GetAtt" in node and node["Fn::GetAtt"][0] not in t["Resources"]:
                found.append(f"GetAtt {node['Fn::GetAtt'][0]}")
            if "Fn::Sub" in node:
                sub = node["Fn::Sub"]
                text, variables = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])
                for name in re.findall(r"\$\{([^}!]+)\}", text):
                    if name.split(".")[0] not in known | set(variables):
                        found.append(f"Sub ${{{name}}}")
                walk(variables)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for section in ("Globals", "Resources", "Outputs"):
        walk(t.get(section, {}))
    return found


@pytest.mark.parametrize("mutate, problem", [
    (None, None),
    (_set(["Resources", "IngestFunction", "Properties", "Events", "InputObjects", "Properties",
           "Queue"], {"Fn::GetAtt": ["IngestQueu", "Arn"]}), "GetAtt IngestQueu"),
    (_set(["Globals", "Function", "Environment", "Variables", "LOGWATCHD_CLEAN_URI"],
          {"Fn::Sub": "s3://${OutputBuckt}/clean"}), "Sub ${OutputBuckt}"),
    (_set(["Resources", "ApiFunction", "Properties", "Policies"],
          [{"DynamoDBReadPolicy": {"TableName": {"Ref": "Ledger"}}}]), "Ref Ledger"),
])
def test_every_reference_resolves(template: Template, mutate: Callable[[Template], None] | None,
                                  problem: str | None) -> None:
    """Every reference names a resource, parameter or pseudo parameter, SAM's parts included."""
    t = copy.deepcopy(template)
    if mutate:
        mutate(t)
    assert dangling_references(t) == ([] if problem is None else [problem])


# --- the ledger table -----------------------------------------------------------------------
def test_ledger_table_is_what_create_table_creates(aws: AwsEnv, template: Template) -> None:
    """The template's one table has the key schema, attributes and billing of the table
    `logwatchd.aws.ledger.create_table` created (read back from DynamoDB)."""
    [(name, table)] = resources(template, "AWS::DynamoDB::Table").items()
    props = table["Properties"]
    created = aws.dynamodb().describe_table(TableName=aws.table)["Table"]
    assert props["KeySchema"] == created["KeySchema"]
    assert sorted(props["AttributeDefinitions"], key=str) == sorted(created["AttributeDefinitions"], key=str)
    assert props["BillingMode"] == created["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert not {"GlobalSecondaryIndexes", "LocalSecondaryIndexes"} & set(props)
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env[aws_settings.LEDGER_TABLE] == {"Ref": name}
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


# --- the queue and the ingest function --------------------------------------------------------
def queue_problems(t: Template) -> list[str]:
    """What is wrong with the ingest path: S3 → queue → ingest function with partial failures."""
    problems = []
    ingest = function_with_handler(t, "logwatchd.aws.lambda_handler")
    timeout = int(function_property(t, ingest, "Timeout") or 3)
    sqs = [e["Properties"] for e in t["Resources"][ingest]["Properties"].get("Events", {}).values()
           if e["Type"] == "SQS"]
    if len(sqs) != 1:
        return [f"{ingest} has {len(sqs)} SQS event sources"]
    queue_name = sqs[0]["Queue"]["Fn::GetAtt"][0]
    if t["Resources"].get(queue_name, {}).get("Type") != "AWS::SQS::Queue":
        return [f"{ingest}: its event source {queue_name} is not a queue of the template"]
    queue = t["Resources"][queue_name]["Properties"]
    if int(queue.get("VisibilityTimeout", 30)) < 6 * timeout:
        problems.append(f"{queue_name}: VisibilityTimeout {queue.get('VisibilityTimeout', 30)} "
                        f"is less than 6 x {ingest}'s Timeout {timeout}")
    if "ReportBatchItemFailures" not in sqs[0].get("FunctionResponseTypes", []):
        problems.append(f"{ingest}: its SQS event source does not report batch item failures")
    redrive = queue.get("RedrivePolicy", {})
    dlq = redrive.get("deadLetterTargetArn", {}).get("Fn::GetAtt", [None])[0]
    if t["Resources"].get(dlq, {}).get("Type") != "AWS::SQS::Queue":
        problems.append(f"{queue_name}: no dead-letter queue")
    if not 1 <= int(redrive.get("maxReceiveCount", 0)) <= 10:
        problems.append(f"{queue_name}: maxReceiveCount {redrive.get('maxReceiveCount')} is not a few")
    buckets = [r for r in resources(t, "AWS::S3::Bucket").values()
               if any(c["Queue"] == {"Fn::GetAtt": [queue_name, "Arn"]} for c in
                      r["Properties"].get("NotificationConfiguration", {}).get("QueueConfigurations", []))]
    if len(buckets) != 1:
        problems.append(f"{len(buckets)} buckets notify {queue_name}")
    return problems


@pytest.mark.parametrize("mutate, problem", [
    (None, None),
    (_set(["Resources", "IngestQueue", "Properties", "VisibilityTimeout"], 5399), "less than 6 x"),
    (_set(["Resources", "IngestFunction", "Properties", "Timeout"], 901), "less than 6 x"),
    (_set(["Resources", "IngestFunction", "Properties", "Events", "InputObjects", "Properties",
           "FunctionResponseTypes"], []), "batch item failures"),
    (_set(["Resources", "IngestQueue", "Properties", "RedrivePolicy", "maxReceiveCount"], 1000),
     "is not a few"),
])
def test_queue_hides_messages_6x_the_timeout_and_reports_partial_failures(
        template: Template, mutate: Callable[[Template], None] | None, problem: str | None) -> None:
    """Visibility timeout ≥ 6 × the ingest function's timeout; batch item failures reported; a
    dead-letter queue after a few receives (and each check fails on a template that breaks it)."""
    t = copy.deepcopy(template)
    if mutate:
        mutate(t)
    problems = queue_problems(t)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_queue_policy_names_the_input_bucket_without_a_cycle(template: Template) -> None:
    """The queue policy allows S3 to send from exactly the input bucket's name, built from the
    same expression, and the bucket waits for the policy (its notification needs it)."""
    [bucket] = [r for r in resources(template, "AWS::S3::Bucket").values()
                if "NotificationConfiguration" in r["Properties"]]
    [policy] = resources(template, "AWS::SQS::QueuePolicy").values()
    name_expr = bucket["Properties"]["BucketName"]["Fn::Sub"]
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    arn_expr = statement["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    assert arn_expr[0] == "arn:${AWS::Partition}:s3:::" + name_expr[0] and arn_expr[1] == name_expr[1]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert bucket["DependsOn"] == "IngestQueuePolicy"
    # Bucket names are lower case: only pseudo parameters that are (account, stack id) are used.
    assert set(re.findall(r"\$\{([^}]+)\}", name_expr[0])) == {"AWS::AccountId", "StackSuffix"}


# --- the functions -----------------------------------------------------------------------------
def test_every_handler_is_importable_from_logwatchd_aws(template: Template) -> None:
    """The three functions name the three handlers, each a callable of logwatchd.aws."""
    names = resources(template, "AWS::Serverless::Function")
    handlers = {handler_of(template, n) for n in names}
    assert handlers == HANDLERS
    for handler in handlers:
        module, _, attr = handler.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr)), handler
    assert {h.rpartition(".")[2] for h in handlers} <= set(vars(logwatchd.aws))


def test_the_image_builds_from_files_that_exist(template: Template) -> None:
    """Each image function's Dockerfile exists, and the build context as docker-py (SAM's
    client) sends it, after .dockerignore, holds everything the Dockerfile copies."""
    from docker.utils.build import exclude_paths

    for name in resources(template, "AWS::Serverless::Function"):
        meta = template["Resources"][name]["Metadata"]
        context = (TEMPLATE.parent / meta["DockerContext"]).resolve()
        dockerfile = context / meta["Dockerfile"]
        assert context == REPO and dockerfile.is_file(), name
        patterns = [line.strip() for line in (context / ".dockerignore").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
        sent = set(exclude_paths(str(context), patterns, dockerfile=meta["Dockerfile"]))
        copied = [src for line in dockerfile.read_text().splitlines() if line.startswith("COPY ")
                  for src in line.split()[1:-1]]
        assert {"pyproject.toml", "logwatchd"} <= set(copied)
        for src in copied:
            path = context / src
            wanted = ([str(p.relative_to(context)) for p in path.rglob("*")
                       if p.is_file() and "__pycache__" not in p.parts] if path.is_dir() else [src])
            assert wanted and set(wanted) <= sent, src
        assert not any(p.startswith((".venv", ".git/", "tests/", "bench/")) for p in sent)


def test_functions_get_exactly_the_settings_variables(template: Template) -> None:
    """Every function gets the five LOGWATCHD_* variables, and their values (as deployed) are
    settings `Settings.from_env` accepts: three distinct prefixes of the output bucket."""
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    names = {aws_settings.CLEAN_URI, aws_settings.ERRORS_URI, aws_settings.QUARANTINE_URI,
             aws_settings.LEDGER_TABLE, aws_settings.TIMEZONE}
    assert set(env) == names
    for name in resources(template, "AWS::Serverless::Function"):
        assert "Environment" not in template["Resources"][name]["Properties"], name
    deployed = {"OutputBucket": "stack-outputbucket-1a2b3c4d5e6f", "LedgerTable": "stack-LedgerTable-ABC123",
                "Timezone": template["Parameters"]["Timezone"]["Default"]}

    def resolve(value: Any) -> str:
        if "Ref" in value:
            return deployed[value["Ref"]]
        return re.sub(r"\$\{(\w+)\}", lambda m: deployed[m.group(1)], value["Fn::Sub"])
    settings = Settings.from_env({k: resolve(v) for k, v in env.items()})
    assert (settings.clean.prefix, settings.errors.prefix, settings.quarantine.prefix) == (
        "clean", "errors", "quarantine")


def test_api_routes_are_the_routes_the_function_serves(template: Template) -> None:
    """The HTTP API sends GET of every described path and /docs asset to the API function,
    and everything else ($default) too, so that 404 and 405 are the app's JSON answers."""
    api_function = function_with_handler(template, "logwatchd.aws.api_handler")
    events = [e["Properties"] for e in template["Resources"][api_function]["Properties"]["Events"].values()]
    assert all(e["ApiId"] == {"Ref": "CountApi"} and e["PayloadFormatVersion"] == "2.0" for e in events)
    routes = {(e["Method"], e["Path"]) for e in events if "Path" in e}
    assert {p for m, p in routes if m == "GET"} == {*LAMBDA_PATHS, "/docs/{asset}"}
    assert all(re.fullmatch(r"/docs/[^/]+", a) for a in DOCS_ASSETS if a != "/docs")
    assert sum("Path" not in e and "Method" not in e for e in events) == 1   # $default
    assert resources(template, "AWS::Serverless::HttpApi")["CountApi"]["Properties"].get(
        "StageName", "$default") == "$default"   # no stage prefix in rawPath


def test_least_privilege_policies(template: Template) -> None:
    """Ingest reads the input bucket and writes the output; compaction touches only the output
    and the table; the API only reads the table."""
    def policies(handler: str) -> dict[str, Any]:
        props = template["Resources"][function_with_handler(template, handler)]["Properties"]
        return {name: args for p in props["Policies"] for name, args in p.items()}
    assert policies("logwatchd.aws.lambda_handler") == {
        "S3ReadPolicy": {"BucketName": {"Ref": "InputBucket"}},
        "S3CrudPolicy": {"BucketName": {"Ref": "OutputBucket"}},
        "DynamoDBCrudPolicy": {"TableName": {"Ref": "LedgerTable"}},
        "SQSPollerPolicy": {"QueueName": {"Fn::GetAtt": ["IngestQueue", "QueueName"]}}}
    assert policies("logwatchd.aws.compact_handler") == {
        "S3CrudPolicy": {"BucketName": {"Ref": "OutputBucket"}},
        "DynamoDBCrudPolicy": {"TableName": {"Ref": "LedgerTable"}}}
    assert policies("logwatchd.aws.api_handler") == {
        "DynamoDBReadPolicy": {"TableName": {"Ref": "LedgerTable"}}}


def test_compaction_runs_on_a_schedule_shorter_than_its_timeout(template: Template) -> None:
    """The compaction function runs every 15 minutes and gives up before the next pass."""
    name = function_with_handler(template, "logwatchd.aws.compact_handler")
    [event] = template["Resources"][name]["Properties"]["Events"].values()
    assert event["Type"] == "Schedule" and event["Properties"]["Schedule"] == "rate(15 minutes)"
    assert int(function_property(template, name, "Timeout")) < 15 * 60


# --- alarms ------------------------------------------------------------------------------------
def test_alarms_watch_the_error_ratio_and_the_dead_letter_queue(template: Template) -> None:
    """The error-ratio alarm divides the ingest function's EMF Errors by Processed (namespace
    logwatchd, dimension Function); the dead-letter alarm fires on one visible message; both,
    and the compaction alarm, notify the topic, which an optional e-mail subscribes to."""
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    ratio = alarms["ErrorRatioAlarm"]["Properties"]
    stats = {m["Id"]: m["MetricStat"]["Metric"] for m in ratio["Metrics"] if "MetricStat" in m}
    ingest = {"Ref": function_with_handler(template, "logwatchd.aws.lambda_handler")}
    assert {(m["Namespace"], m["MetricName"]) for m in stats.values()} == {
        ("logwatchd", "Errors"), ("logwatchd", "Processed")}
    assert all(m["Dimensions"] == [{"Name": "Function", "Value": ingest}] for m in stats.values())
    [expression] = [m for m in ratio["Metrics"] if m.get("ReturnData")]
    assert "errors" in expression["Expression"] and "/ processed" in expression["Expression"]
    assert ratio["Threshold"] == {"Ref": "ErrorRatioThreshold"}
    dlq = alarms["DeadLetterAlarm"]["Properties"]
    assert (dlq["Namespace"], dlq["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}]
    assert (dlq["ComparisonOperator"], dlq["Threshold"]) == ("GreaterThanThreshold", 0)
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    [subscription] = resources(template, "AWS::SNS::Subscription").values()
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}


def test_outputs_name_what_a_user_needs(template: Template) -> None:
    """The stack's outputs give the API's URL, the buckets, the dataset's URI and the table."""
    assert {"ApiUrl", "InputBucketName", "OutputBucketName", "CleanUri", "LedgerTableName",
            "DeadLetterQueueUrl"} <= set(template["Outputs"])
