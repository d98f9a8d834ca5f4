#!/usr/bin/env python3
"""Writes the monitoring that ships beside the exporter from one config file.

    python3 monitoring/generate.py            # rewrite the generated files
    python3 monitoring/generate.py --check    # exit 1 if a generated file is out of date
    python3 monitoring/generate.py --config my.json --out DIR   # another config, elsewhere

monitoring/config.json says which targets are this project's (the exporter's selector and
the labels that keep environments apart), where runbook links point, which label every
alert of this project carries and what the severities are called. From it:

- monitoring/templates/** → the same paths under the output directory
  (prometheus/rules/*.yml, prometheus/tests/*.yml, prometheus/alertmanager.yml), with
  ${name} placeholders filled in (PLACEHOLDERS below lists them);
- monitoring/dashboards.py → grafana/dashboards/*.json.

tests/monitoring runs --check, and runs promtool, amtool and the live stack on the output
of this config and of a different one. Standard library only.
"""

import argparse
import json
import pathlib
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ beside the sources in the repository
import dashboards  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
TEMPLATES = HERE / "templates"
DEFAULT_CONFIG = HERE / "config.json"
# Directories whose every file is generated: a file no template produces is stale.
GENERATED_DIRS = {"prometheus/rules": ".yml", "prometheus/tests": ".yml", "grafana/dashboards": ".json"}

PLACEHOLDERS = """
Inline, anywhere in a line:
  ${selector}                 the exporter's selector, e.g. job="messaging-exporter"
  ${by}                       the exporter's group labels, e.g. job (for `by (...)`, `on (...)`)
  ${series}                   labels of an exporter series in promtool tests, as matchers
  ${group_series}             its group labels only (what a recorded series keeps)
  ${alertmanager_selector}    Alertmanager's selector, and ${alertmanager_series} for tests
  ${prometheus_selector}      Prometheus's selector, and ${prometheus_series} for tests
  ${service}                  the value of the `service` label every alert carries
  ${runbook}                  the runbook base URL (each alert appends #its-name)
  ${page} ${ticket} ${none}   the severity names
Alone on a line (expanded to `label: value` lines at that indentation), for exp_labels:
  ${group_labels}             the group labels of the test exporter series
  ${series_labels}            every label of the test exporter series
  ${absent_labels}            the labels absent(up{${selector}}) gives
  ${alertmanager_labels}      the labels of the test Alertmanager series
  ${prometheus_labels}        the labels of the test Prometheus series
"""

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
PLACEHOLDER = re.compile(r"\$\{([a-z_]+)\}")


class ConfigError(Exception):
    pass


def parse_matchers(selector, where):
    """`a="x", b=~"y"` → [(name, op, value)]; the whole string must be matchers."""
    out, pos = [], 0
    while pos < len(selector):
        m = MATCHER.match(selector, pos)
        if not m or m.end() == pos:
            raise ConfigError(f"{where}: {selector!r} is not a list of PromQL label matchers")
        out.append((m.group(1), m.group(2), json.loads(f'"{m.group(3)}"')))
        pos = m.end()
    if not out:
        raise ConfigError(f"{where}: empty selector")
    return out


def satisfies(labels, matchers):
    for name, op, value in matchers:
        have = labels.get(name, "")
        ok = {"=": have == value, "!=": have != value,
              "=~": re.fullmatch(value, have) is not None,
              "!~": re.fullmatch(value, have) is None}[op]
        if not ok:
            return False
    return True


class Target:
    """A scrape target of the config: its selector and a series it matches, for tests."""

    def __init__(self, raw, where):
        if not isinstance(raw, dict) or not isinstance(raw.get("selector"), str):
            raise ConfigError(f"{where}: needs a \"selector\" string")
        self.selector = raw["selector"].strip()
        self.matchers = parse_matchers(self.selector, f"{where}.selector")
        self.absent_labels = {n: v for n, op, v in self.matchers if op == "="}
        self.test_labels = dict(self.absent_labels)
        self.test_labels.update(raw.get("test_labels", {}))
        if not satisfies(self.test_labels, self.matchers):
            raise ConfigError(
                f"{where}: the promtool tests need a series the selector matches; give its "
                f"labels as \"test_labels\" (now {self.test_labels})")

    def series(self, only=None):
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in self.test_labels.items()
                         if only is None or k in only)


class Config:
    def __init__(self, raw):
        self.exporter = Target(raw.get("exporter"), "exporter")
        self.alertmanager = Target(raw.get("alertmanager"), "alertmanager")
        self.prometheus = Target(raw.get("prometheus"), "prometheus")
        groups = raw["exporter"].get("group_labels")
        if not (isinstance(groups, list) and groups
                and all(isinstance(g, str) and LABEL_NAME.fullmatch(g) for g in groups)):
            raise ConfigError("exporter.group_labels: a non-empty list of label names")
        missing = [g for g in groups if g not in self.exporter.test_labels]
        if missing:
            raise ConfigError(f"exporter.test_labels: give a value for the group labels {missing}")
        self.group_labels = groups
        self.service = raw.get("service")
        if not (isinstance(self.service, str) and self.service):
            raise ConfigError("service: the value of the label every alert carries")
        self.runbook_base = str(raw.get("runbook_base", "")).rstrip("/")
        if not re.fullmatch(r"https?://[^\s#]+", self.runbook_base):
            raise ConfigError("runbook_base: an http(s) URL without a #fragment")
        sev = raw.get("severity", {})
        self.severity = {k: sev.get(k) for k in ("page", "ticket", "none")}
        names = list(self.severity.values())
        if not all(isinstance(n, str) and LABEL_NAME.fullmatch(n) for n in names) \
                or len(set(names)) != 3:
            raise ConfigError("severity: three different names for page, ticket and none")

    def inline(self):
        e, am, pr = self.exporter, self.alertmanager, self.prometheus
        return {
            "selector": e.selector, "by": ", ".join(self.group_labels), "series": e.series(),
            "group_series": e.series(self.group_labels),
            "alertmanager_selector": am.selector, "alertmanager_series": am.series(),
            "prometheus_selector": pr.selector, "prometheus_series": pr.series(),
            "service": self.service, "runbook": self.runbook_base, **self.severity,
        }

    def blocks(self):
        def lines(labels):
            return [f"{k}: {json.dumps(v)}" for k, v in labels.items()]
        e = self.exporter
        return {
            "group_labels": lines({g: e.test_labels[g] for g in self.group_labels}),
            "series_labels": lines(e.test_labels),
            "absent_labels": lines(e.absent_labels),
            "alertmanager_labels": lines(self.alertmanager.test_labels),
            "prometheus_labels": lines(self.prometheus.test_labels),
        }


def fill(text, inline, blocks, origin):
    """Fills the ${name} placeholders of one template; unknown names are errors."""
    out = []
    for no, line in enumerate(text.splitlines(), start=1):
        alone = PLACEHOLDER.fullmatch(line.strip())
        if alone and alone.group(1) in blocks:
            indent = line[: len(line) - len(line.lstrip())]
            out += [indent + b for b in blocks[alone.group(1)]]
            continue

        def value(m):
            if m.group(1) not in inline:
                raise ConfigError(f"{origin}:{no}: unknown placeholder {m.group(0)}")
            return inline[m.group(1)]

        line = PLACEHOLDER.sub(value, line)
        if "${" in line:
            raise ConfigError(f"{origin}:{no}: malformed placeholder in {line.strip()!r}")
        out.append(line)
    return "\n".join(out) + "\n"


def outputs(config):
    """Every generated file: repository-relative path → text."""
    inline, blocks = config.inline(), config.blocks()
    files = {}
    for path in sorted(TEMPLATES.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(TEMPLATES).as_posix()
        header = (f"# Generated by monitoring/generate.py from monitoring/templates/{rel} and "
                  "monitoring/config.json:\n# edit those, then run python3 monitoring/generate.py.\n")
        files[rel] = header + fill(path.read_text(encoding="utf-8"), inline, blocks, rel)
    for name, board in dashboards.build(config).items():
        files[f"grafana/dashboards/{name}"] = json.dumps(board, indent=2, ensure_ascii=False) + "\n"
    return files


def stale_files(out_dir, files):
    extra = []
    for rel_dir, ext in GENERATED_DIRS.items():
        d = out_dir / rel_dir
        if d.is_dir():
            extra += [p for p in d.iterdir()
                      if p.name.endswith(ext) and p.relative_to(out_dir).as_posix() not in files]
    return extra


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=PLACEHOLDERS, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=pathlib.Path, default=DEFAULT_CONFIG)
    ap.add_argument("--out", type=pathlib.Path, default=REPO)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if out of date")
    args = ap.parse_args(argv)
    try:
        config = Config(json.loads(args.config.read_text(encoding="utf-8")))
        files = outputs(config)
    except (ConfigError, OSError, json.JSONDecodeError) as e:
        print(f"{args.config}: {e}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    differ = [rel for rel, text in files.items()
              if not (out / rel).is_file() or (out / rel).read_text(encoding="utf-8") != text]
    extra = stale_files(out, files)
    if args.check:
        if differ or extra:
            names = differ + [p.relative_to(out).as_posix() + " (no template makes it)" for p in extra]
            print("out of date (run python3 monitoring/generate.py): " + ", ".join(names),
                  file=sys.stderr)
            return 1
        return 0
    for rel in differ:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(files[rel], encoding="utf-8")
    for p in extra:
        p.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
