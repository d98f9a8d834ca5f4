//! The Deployment, Service and ServiceMonitor against what the exporter needs: its port,
//! probe paths, secrets as `<NAME>_FILE` files (CONTRACT §6.9), the image's non-root
//! user, a read-only root filesystem, and a scrape that reaches every replica.

use std::process::Command;

use serde_json::Value;

use super::support::{object, rendered, repo, run};

/// CONTRACT §6.9's secrets, each given to the exporter as a file.
pub const SECRET_FILE_VARS: [&str; 5] = [
    "API_KEY_FILE",
    "META_APP_SECRET_FILE",
    "META_VERIFY_TOKEN_FILE",
    "TWILIO_AUTH_TOKEN_FILE",
    "DATABASE_URL_FILE",
];

/// The exporter's container in the rendered Deployment.
pub fn container(objects: &[Value]) -> &Value {
    let containers = object(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

/// The container's plain environment (name → value).
pub fn env(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = e["value"].as_str();
            let name = e["name"].as_str().unwrap();
            let value = value.unwrap_or_else(|| panic!("{name} is not a plain value: {e}"));
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    let found = env.iter().find(|(n, _)| n == name);
    &found.unwrap_or_else(|| panic!("{name} is not set")).1
}

/// Where the secret volume is mounted, read-only.
pub fn secrets_mount(objects: &[Value]) -> String {
    let pod = &object(objects, "Deployment")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"].is_object())
        .expect("a secret volume");
    // Every key a file: an `items` list would make each key it names mandatory.
    assert!(volume["secret"]["items"].is_null(), "{volume}");
    let mount = container(objects)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the secret volume is mounted");
    assert_eq!(mount["readOnly"], true, "secrets are mounted read-only");
    str_of(&mount["mountPath"])
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a string"))
        .to_owned()
}

#[test]
fn the_container_listens_where_its_port_and_probes_point() {
    let objects = rendered();
    let c = container(&objects);
    let port = &c["ports"][0];
    assert_eq!(
        (&port["name"], &port["containerPort"]),
        (&"http".into(), &9469.into())
    );
    // Every interface, on the port declared: a loopback address would fail every probe.
    assert_eq!(env_value(&env(c), "LISTEN_ADDR"), "0.0.0.0:9469");
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "http", "{probe}");
    }
    let grace = object(&objects, "Deployment")["spec"]["template"]["spec"]
        ["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    // The drain lasts up to REQUEST_TIMEOUT_MS (30 s by default), after the preStop sleep.
    assert!(grace >= 35, "terminationGracePeriodSeconds {grace}");
}

#[test]
fn every_secret_is_a_mounted_file_the_exporter_reads_by_its_file_variable() {
    let objects = rendered();
    let c = container(&objects);
    let env = env(c);
    let mount = secrets_mount(&objects);
    let help = run(
        Command::new(env!("CARGO_BIN_EXE_messaging-exporter")).arg("--help"),
        b"",
        "messaging-exporter --help",
    );
    let mut files = Vec::new();
    for var in SECRET_FILE_VARS {
        let path = env_value(&env, var);
        let file = path.strip_prefix(&format!("{mount}/"));
        let file = file.unwrap_or_else(|| panic!("{var}={path} is not a file of {mount}"));
        assert!(!file.is_empty() && !file.contains('/'), "{var}={path}");
        files.push(file);
        let known = help.contains(&format!("env: {var}="));
        assert!(known, "the exporter has no {var}");
    }
    // Secrets never sit in the environment, where `kubectl describe` and crash dumps show them.
    for (name, _) in &env {
        let secret = SECRET_FILE_VARS
            .iter()
            .any(|v| v.strip_suffix("_FILE") == Some(name));
        assert!(!secret, "{name} is set directly; use {name}_FILE");
    }
    files.sort_unstable();
    files.dedup();
    assert_eq!(files.len(), SECRET_FILE_VARS.len(), "one file per secret");
}

#[test]
fn the_pod_runs_as_the_images_user_read_only_without_privileges_within_limits() {
    let objects = rendered();
    let pod = &object(&objects, "Deployment")["spec"]["template"]["spec"];
    let c = container(&objects);
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let uid = dockerfile
        .split_whitespace()
        .skip_while(|w| *w != "--uid")
        .nth(1)
        .expect("the Dockerfile creates its user with --uid");
    assert_eq!(pod["securityContext"]["runAsUser"].to_string(), uid);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(
        sc["capabilities"]["add"].is_null(),
        "no capability is added"
    );
    assert!(sc["privileged"] != true);
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            let v = &c["resources"][bound][resource];
            assert!(v.is_string(), "resources.{bound}.{resource} is {v}");
        }
    }
}

/// True when every label of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a label selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

#[test]
fn the_service_and_servicemonitor_reach_every_replicas_metrics() {
    let objects = rendered();
    let deployment = object(&objects, "Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let service = object(&objects, "Service");
    assert!(selects(&service["spec"]["selector"], pod_labels));
    let port = &service["spec"]["ports"][0];
    assert_eq!(port["targetPort"], "http");
    // The rules select job="messaging-exporter", the job Prometheus names after the Service.
    assert_eq!(service["metadata"]["name"], "messaging-exporter");
    let monitor = object(&objects, "ServiceMonitor");
    assert!(monitor["spec"]["jobLabel"].is_null());
    let selector = &monitor["spec"]["selector"]["matchLabels"];
    assert!(selects(selector, &service["metadata"]["labels"]));
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], port["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    let budget = object(&objects, "PodDisruptionBudget");
    assert!(selects(
        &budget["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
}
