//! The manifests against the Kubernetes API and prometheus-operator schemas, and the
//! PrometheusRule against the rule files it is generated from.

use std::collections::BTreeSet;
use std::process::Command;

use super::support::{parse_yaml, rendered_yaml, repo, run, tool, TempDir};

/// The oldest Kubernetes release the manifests are checked against, beside
/// kubernetes-validate's newest.
const OLDEST_KUBERNETES: &str = "1.29";

/// Core kinds, which kubernetes-validate knows, and the prometheus-operator kinds with
/// their vendored schemas.
const CORE: [&str; 3] = ["Deployment", "Service", "PodDisruptionBudget"];
const OPERATOR: [(&str, &str); 2] = [
    ("ServiceMonitor", "servicemonitor_v1.json"),
    ("PrometheusRule", "prometheusrule_v1.json"),
];

#[test]
fn the_rendered_manifests_pass_the_kubernetes_api_schemas_strictly() {
    let yaml = rendered_yaml();
    let kinds: BTreeSet<String> = parse_yaml(&yaml)
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = CORE
        .into_iter()
        .chain(OPERATOR.map(|(k, _)| k))
        .map(str::to_owned)
        .collect();
    assert_eq!(kinds, expected, "the kinds kustomize renders");

    let tmp = TempDir::new("messaging-k8s-schemas");
    let file = tmp.path("rendered.yaml");
    std::fs::write(&file, &yaml).unwrap();
    for version in [Some(OLDEST_KUBERNETES), None] {
        let mut cmd = Command::new(tool("kubernetes-validate"));
        cmd.arg("--strict");
        if let Some(v) = version {
            cmd.args(["--kubernetes-version", v]);
        }
        let out = run(cmd.arg(&file), b"", "kubernetes-validate --strict");
        for kind in CORE {
            let passed = format!("passed for resource {}/", kind.to_lowercase());
            assert!(
                out.contains(&passed),
                "kubernetes-validate ({version:?}) did not pass the {kind}:\n{out}"
            );
        }
    }
}

#[test]
fn the_servicemonitor_and_prometheusrule_pass_the_prometheus_operator_crd_schemas() {
    let objects = parse_yaml(&rendered_yaml());
    let tmp = TempDir::new("messaging-k8s-crds");
    for (kind, schema) in OPERATOR {
        let object = super::support::object(&objects, kind);
        let file = tmp.path(format!("{kind}.json"));
        std::fs::write(&file, serde_json::to_vec(object).unwrap()).unwrap();
        let schema = repo().join("tests/kubernetes/schemas").join(schema);
        run(
            Command::new(tool("check-jsonschema"))
                .arg("--schemafile")
                .arg(&schema)
                .arg(&file),
            b"",
            &format!("check-jsonschema on the {kind}"),
        );
    }
}

#[test]
fn the_prometheusrule_is_generated_from_the_rule_files() {
    // On failure the script prints the diff and says to run it without --check.
    run(
        Command::new(tool("python3")).args(["scripts/gen-k8s-rules.py", "--check"]),
        b"",
        "deploy/kubernetes/prometheusrule.yaml is stale or prometheus/rules/*.yml cannot be \
         turned into one; regenerate it with `python3 scripts/gen-k8s-rules.py`",
    );
}
