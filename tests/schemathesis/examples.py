"""Every example in openapi.yaml, request and response, conforms to its own schema.

Run by scripts/schemathesis with the .venv's Python, where openapi-spec-validator has
installed openapi-schema-validator (JSON Schema 2020-12, as OpenAPI 3.1 uses).
"""

import json
import sys

import referencing.jsonschema
import yaml
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource

with open(sys.argv[1]) as f:
    DOCUMENT = yaml.safe_load(f)
REGISTRY = Registry().with_resource(
    "urn:openapi",
    Resource.from_contents(DOCUMENT, default_specification=referencing.jsonschema.DRAFT202012),
)


def follow(value):
    """Follows local references to the object they name."""
    while isinstance(value, dict) and "$ref" in value:
        target = DOCUMENT
        for part in value["$ref"].lstrip("#/").split("/"):
            target = target[part]
        value = target
    return value


def examples(content):
    found = []
    if "example" in content:
        found.append(("example", content["example"]))
    for name, example in content.get("examples", {}).items():
        found.append((name, follow(example)["value"]))
    return found


def check(schema, value):
    schema = json.loads(json.dumps(schema).replace('"#/', '"urn:openapi#/'))
    return [e.message for e in OAS31Validator(schema, registry=REGISTRY).iter_errors(value)]


failures, checked = [], 0
for path, item in DOCUMENT["paths"].items():
    for method, operation in item.items():
        if method == "parameters":
            continue
        places = []
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            places.append(("request", body))
        for status, response in operation["responses"].items():
            content = follow(response).get("content", {}).get("application/json")
            if content:
                places.append((status, content))
        for where, content in places:
            for name, value in examples(content):
                checked += 1
                for message in check(content["schema"], value):
                    failures.append(f"{method.upper()} {path} {where} {name}: {message}")
for failure in failures:
    print(failure)
print(f"examples: {checked} checked against their schemas, {len(failures)} do not conform")
sys.exit(1 if failures else 0)
