"""infra/samconfig.toml as SAM CLI itself reads it.

SAM CLI joins nothing and quotes nothing for you: each `parameter_overrides` entry is parsed
by `sam deploy`'s own option type, which ends an unquoted value at its first space, so
`RotationSchedule=rate(5 minutes)` deploys `rate(5` and the stack rolls back. This builds
`sam deploy`'s click context from the file (SAM CLI's own configuration loading and parsing,
nothing reimplemented here) and checks that:

- every override in the file comes out whole, as the file's author wrote it;
- every value is one the template's parameter accepts (its AllowedValues or AllowedPattern),
  and the schedule is an EventBridge rate or cron expression;
- a JSON value, quoted as the README shows, comes out whole too;
- `--parameter-overrides` on the command line replaces the file's list rather than adding to
  it, as the README warns.

usage: python samconfig_check.py REPOSITORY   (with aws-sam-cli installed; scripts/test does)
It prints `samconfig: N passed, N failed` last.
"""

import os
import re
import shlex
import sys
import tempfile
import tomllib

import yaml
from samcli.commands.deploy.command import cli as sam_deploy

ROOT = os.path.abspath(sys.argv[1])
INFRA = os.path.join(ROOT, "infra")


def deploy_parameters(filename="samconfig.toml", args=()):
    """What `sam deploy` would run with: the overrides after SAM CLI parsed them."""
    context = sam_deploy.make_context("deploy", ["--config-file", filename, *args])
    return context.params.get("parameter_overrides") or {}


def written(path):
    """The overrides as the file's author wrote them: each entry split at its first `=`,
    one pair of wrapping quotes removed, as SAM CLI documents. `sam deploy --guided` saves
    them as one string instead of a list, whose entries are split as a shell splits words."""
    with open(path, "rb") as f:
        entries = tomllib.load(f)["default"]["deploy"]["parameters"]["parameter_overrides"]
    if isinstance(entries, str):
        entries = shlex.split(entries)
    pairs = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"')
        pairs[key] = value
    return pairs


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags kept as plain values."""


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def template_parameters():
    with open(os.path.join(INFRA, "template.yaml")) as f:
        return yaml.load(f, Loader=CfnLoader)["Parameters"]


results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok' if ok else 'FAILED'}: {name}{'' if ok else ': ' + detail}")


def main():
    os.chdir(INFRA)
    parsed = deploy_parameters()
    expected = written(os.path.join(INFRA, "samconfig.toml"))
    for key, value in expected.items():
        check(f"{key} comes out whole", parsed.get(key) == value, f"sam deploy reads {parsed.get(key)!r}, the file means {value!r}")
    check("no override is added or lost", set(parsed) == set(expected), f"{sorted(parsed)} against {sorted(expected)}")

    parameters = template_parameters()
    for key, value in parsed.items():
        spec = parameters.get(key)
        if spec is None:
            check(f"{key} is a template parameter", False, "the template has no such parameter")
            continue
        allowed = spec.get("AllowedValues")
        pattern = spec.get("AllowedPattern")
        ok = (allowed is None or value in [str(a) for a in allowed]) and (
            pattern is None or re.fullmatch(pattern, value) is not None
        )
        check(f"{key}={value!r} is a value the template accepts", ok, f"allowed {allowed}, pattern {pattern}")
    schedule = parsed.get("RotationSchedule", "rate(5 minutes)")
    check(
        "RotationSchedule is a whole rate or cron expression",
        re.fullmatch(r"rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\([^()]+\)", schedule) is not None,
        schedule,
    )

    # A JSON value, quoted the way the README shows, comes out whole.
    scopes = '{"GET /orders": "orders:read", "POST /orders": "orders:write"}'
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "samconfig.toml")
        with open(path, "w") as f:
            f.write('version = 0.1\n[default.deploy.parameters]\nstack_name = "keyward"\n')
            f.write(f'template_file = "{os.path.join(INFRA, "template.yaml")}"\nparameter_overrides = [\n')
            f.write("  'AuthorizerRouteScopes=\"" + scopes.replace('"', '\\"') + "\"',\n")
            f.write("  'RotationSchedule=\"rate(5 minutes)\"',\n]\n")
        quoted = deploy_parameters(path)
    check("a quoted JSON value comes out whole", quoted.get("AuthorizerRouteScopes") == scopes, repr(quoted))

    # The command line replaces the file's list: every override must be given again.
    replaced = deploy_parameters(args=["--parameter-overrides", "StageName=test"])
    check("--parameter-overrides replaces the file's list", replaced == {"StageName": "test"}, repr(replaced))

    failed = results.count(False)
    print(f"samconfig: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
