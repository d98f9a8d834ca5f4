#!/usr/bin/env python3
"""Turns a CustomResourceDefinition into the JSON Schema check-jsonschema validates a
resource against: the v1 openAPIV3Schema, without descriptions, made strict (an object
that lists its properties allows no others, as `kubectl --validate=strict` would refuse
a misspelt field that the API server would otherwise drop) and pinned to the CRD's kind.
Go's `(?i)` flag, which ECMAScript patterns lack, becomes letter classes.

    python3 from_crd.py CRD.yaml > KIND.json
"""
import json
import sys

import yaml


def ecma_pattern(pattern):
    """`^(?i)(abort|warn)?$` as `^([aA][bB][oO][rR][tT]|[wW][aA][rR][nN])?$`."""
    if "(?i)" not in pattern:
        return pattern
    out, escaped, in_class = [], False, False
    for c in pattern.replace("(?i)", ""):
        if escaped:
            out.append(c)
            escaped = False
            continue
        escaped = c == "\\"
        in_class = (in_class or c == "[") and c != "]"
        if c.isascii() and c.isalpha() and not in_class:
            out.append(f"[{c.lower()}{c.upper()}]")
        else:
            out.append(c)
    return "".join(out)


def strict(node):
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items() if k != "description"}
    if isinstance(out.get("pattern"), str):
        out["pattern"] = ecma_pattern(out["pattern"])
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def main(path):
    crd = yaml.safe_load(open(path))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = strict(version["schema"]["openAPIV3Schema"])
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    schema["properties"]["apiVersion"] = {"enum": [f"{group}/v1"]}
    schema["properties"]["kind"] = {"enum": [kind]}
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    schema["title"] = f"{kind} ({group}/v1), strict"
    json.dump(schema, sys.stdout, sort_keys=True, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
