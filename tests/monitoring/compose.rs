//! docker-compose.yml and the Dockerfile, checked structurally (no Docker engine here):
//! every mounted file exists, every published port is the one the configs use, every
//! variable is documented in .env.example, the image is multi-stage and not root.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::support::{read, repo, yaml_file};

/// `"127.0.0.1:9090:9090"` → (published port, container port).
fn port_mapping(spec: &str) -> (u16, u16) {
    let parts: Vec<&str> = spec.split(':').collect();
    let n = parts.len();
    assert!(
        n >= 2,
        "port mapping {spec:?} should name host and container ports"
    );
    let p = |s: &str| {
        s.parse::<u16>()
            .unwrap_or_else(|_| panic!("port {s:?} in {spec:?}"))
    };
    (p(parts[n - 2]), p(parts[n - 1]))
}

fn host_port(target: &str) -> (String, u16) {
    let target = target.split_once("://").map_or(target, |(_, rest)| rest);
    let hostport = target.split('/').next().unwrap_or_default();
    let hostport = hostport.rsplit('@').next().unwrap_or_default();
    let (h, p) = hostport
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{target:?} has no port"));
    (
        h.to_owned(),
        p.parse().unwrap_or_else(|_| panic!("{target:?}: bad port")),
    )
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

/// A service's environment as a map, from either compose form.
fn environment(service: &Value) -> BTreeMap<String, Option<String>> {
    match &service["environment"] {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned)))
            .collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(|s| match s.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (s.to_owned(), None),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `${NAME:-default}` → `default` (what compose uses when NAME is unset).
fn default_of(value: &str) -> String {
    match value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .and_then(|v| v.split_once(":-"))
    {
        Some((_, default)) => default.to_owned(),
        None => value.to_owned(),
    }
}

/// The value of `--flag=` in a compose service's command (a list, or one shell line), as
/// compose gives it with the variables unset.
pub fn command_flag(service: &str, flag: &str) -> Option<String> {
    let compose = yaml_file("docker-compose.yml");
    let command = str_list(&compose["services"][service]["command"]).join(" ");
    command
        .split_whitespace()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
        .map(default_of)
}

/// Notification links (Prometheus's generatorURL, Alertmanager's externalURL and silence
/// links) point where people reach the two, not at a container's hostname.
#[test]
fn prometheus_and_alertmanager_know_the_urls_they_are_reached_at() {
    for (service, port) in [("prometheus", 9090), ("alertmanager", 9093)] {
        let url = command_flag(service, "--web.external-url")
            .unwrap_or_else(|| panic!("{service} runs without --web.external-url"));
        let text = read("docker-compose.yml");
        let var = format!("{}_EXTERNAL_URL", service.to_uppercase());
        assert!(
            text.contains(&format!("--web.external-url=${{{var}:-")),
            "{service}'s external URL is not set from {var}"
        );
        assert!(
            url.starts_with("http://") || url.starts_with("https://"),
            "{service}'s default external URL {url:?} is not absolute"
        );
        assert_eq!(
            host_port(&url).1,
            port,
            "{service}'s default external URL {url} is not its published port"
        );
        assert_eq!(
            command_flag(service, "--web.route-prefix").as_deref(),
            Some("/"),
            "{service}: without --web.route-prefix=/ a path in the external URL moves every \
             route the stack itself uses"
        );
    }
}

#[test]
fn compose_stack_mounts_existing_files_and_publishes_the_ports_its_configs_use() {
    let compose = yaml_file("docker-compose.yml");
    let services = compose["services"].as_object().expect("services");
    for s in [
        "postgres",
        "exporter",
        "prometheus",
        "alertmanager",
        "grafana",
    ] {
        assert!(
            services.contains_key(s),
            "docker-compose.yml has no {s} service"
        );
    }
    let named_volumes: BTreeSet<String> = compose["volumes"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();

    // Mounts: bind sources exist, named volumes are declared. Container path → source.
    let mut mounts: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut published: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for (name, svc) in services {
        for v in str_list(&svc["volumes"]) {
            let mut parts = v.split(':');
            let (src, dst) = (
                parts.next().unwrap(),
                parts
                    .next()
                    .unwrap_or_else(|| panic!("{name}: volume {v:?}")),
            );
            if src.starts_with("./") {
                let path = repo().join(src);
                assert!(path.exists(), "{name} mounts {src}, which does not exist");
            } else {
                assert!(
                    named_volumes.contains(src),
                    "{name} uses volume {src:?}, not declared under volumes:"
                );
            }
            mounts.insert((name.clone(), dst.to_owned()), src.to_owned());
        }
        for p in str_list(&svc["ports"]) {
            let (host, container) = port_mapping(&p);
            assert_eq!(
                host, container,
                "{name}: publish {p:?} on the same port the docs list"
            );
            published.entry(name.clone()).or_default().push(container);
        }
    }
    let mount = |svc: &str, dst: &str| -> String {
        mounts
            .get(&(svc.to_owned(), dst.to_owned()))
            .cloned()
            .unwrap_or_else(|| panic!("{svc} does not mount anything at {dst}"))
    };
    let publishes = |svc: &str, port: u16| {
        assert!(
            published.get(svc).is_some_and(|p| p.contains(&port)),
            "{svc} should publish port {port} (it publishes {:?})",
            published.get(svc)
        );
    };

    // Exporter: LISTEN_ADDR, the published port, the Dockerfile and Prometheus agree.
    let env = environment(&services["exporter"]);
    let listen = env
        .get("LISTEN_ADDR")
        .cloned()
        .flatten()
        .expect("exporter sets LISTEN_ADDR");
    let (_, exporter_port) = host_port(&listen);
    publishes("exporter", exporter_port);
    assert!(
        env.contains_key("API_KEY")
            || environment(&services["exporter"]).contains_key("ALLOW_UNAUTHENTICATED"),
        "the exporter listens on {listen}: it needs API_KEY or ALLOW_UNAUTHENTICATED"
    );
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains(&format!("EXPOSE {exporter_port}")),
        "Dockerfile should EXPOSE {exporter_port}"
    );
    let db_url = env
        .get("DATABASE_URL")
        .cloned()
        .flatten()
        .expect("exporter sets DATABASE_URL");
    assert_eq!(
        host_port(&db_url),
        ("postgres".to_owned(), 5432),
        "DATABASE_URL should point at the postgres service"
    );

    // Prometheus: its config is mounted where the command reads it, rules beside it.
    let prom_cmd = str_list(&services["prometheus"]["command"]);
    let config_path = prom_cmd
        .iter()
        .find_map(|a| a.strip_prefix("--config.file="))
        .expect("prometheus --config.file");
    assert_eq!(
        mount("prometheus", config_path),
        "./prometheus/prometheus.yml"
    );
    let prom = yaml_file("prometheus/prometheus.yml");
    for pattern in str_list(&prom["rule_files"]) {
        let dir = pattern.rsplit_once('/').map(|(d, _)| d).unwrap_or(".");
        let config_dir = config_path.rsplit_once('/').unwrap().0;
        assert_eq!(
            mount("prometheus", &format!("{config_dir}/{dir}")),
            format!("./prometheus/{dir}")
        );
    }
    let targets = |job: &str| -> Vec<(String, u16)> {
        let jobs = prom["scrape_configs"].as_array().expect("scrape_configs");
        let j = jobs
            .iter()
            .find(|j| j["job_name"] == job)
            .unwrap_or_else(|| panic!("no scrape job {job}"));
        j["static_configs"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| str_list(&s["targets"]))
            .map(|t| host_port(&t))
            .collect()
    };
    assert_eq!(
        targets("messaging-exporter"),
        vec![("exporter".to_owned(), exporter_port)]
    );
    let prom_port = prom_cmd
        .iter()
        .find_map(|a| a.strip_prefix("--web.listen-address="))
        .map_or(9090, |a| host_port(a).1);
    publishes("prometheus", prom_port);
    assert_eq!(
        targets("prometheus"),
        vec![("localhost".to_owned(), prom_port)]
    );

    // Alertmanager: Prometheus sends to and scrapes the published port.
    let am_cmd = str_list(&services["alertmanager"]["command"]).join(" ");
    let am_port = am_cmd
        .split_whitespace()
        .find_map(|a| a.strip_prefix("--web.listen-address="))
        .map_or(9093, |a| host_port(a).1);
    publishes("alertmanager", am_port);
    assert_eq!(
        targets("alertmanager"),
        vec![("alertmanager".to_owned(), am_port)]
    );
    let am_targets: Vec<(String, u16)> = prom["alerting"]["alertmanagers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["static_configs"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| str_list(&s["targets"]))
        .map(|t| host_port(&t))
        .collect();
    assert_eq!(am_targets, vec![("alertmanager".to_owned(), am_port)]);
    assert_eq!(
        mount("alertmanager", "/etc/alertmanager/alertmanager.yml"),
        "./prometheus/alertmanager.yml"
    );
    assert_eq!(
        mount("alertmanager", "/etc/alertmanager/render-config.sh"),
        "./prometheus/render-alertmanager-config.sh"
    );
    assert!(
        am_cmd.contains("/etc/alertmanager/render-config.sh /etc/alertmanager/alertmanager.yml"),
        "alertmanager renders its mounted config"
    );

    // Grafana: provisioning and dashboards where the provider looks; datasources point at
    // the services' ports.
    let gf_env = environment(&services["grafana"]);
    let gf_port = gf_env
        .get("GF_SERVER_HTTP_PORT")
        .cloned()
        .flatten()
        .map_or(3000, |p| p.parse().unwrap());
    publishes("grafana", gf_port);
    assert_eq!(
        mount("grafana", "/etc/grafana/provisioning"),
        "./grafana/provisioning"
    );
    let provider = yaml_file("grafana/provisioning/dashboards/dashboards.yml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("dashboard provider path");
    assert_eq!(mount("grafana", path), "./grafana/dashboards");
    let ds = yaml_file("grafana/provisioning/datasources/datasources.yml");
    for d in ds["datasources"].as_array().unwrap() {
        let url = d["url"].as_str().expect("datasource url");
        let want = match d["uid"].as_str() {
            Some("prometheus") => ("prometheus".to_owned(), prom_port),
            Some("postgres") => ("postgres".to_owned(), 5432),
            other => panic!("unexpected datasource {other:?}"),
        };
        assert_eq!(host_port(url), want, "datasource {} url", d["uid"]);
        for var in [
            d["user"].as_str(),
            d["jsonData"]["database"].as_str(),
            d["secureJsonData"]["password"].as_str(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|s| s.strip_prefix("${").and_then(|s| s.strip_suffix('}')))
        {
            assert!(
                gf_env.contains_key(var),
                "grafana's datasources read ${{{var}}}, which compose does not set"
            );
        }
    }
    let init = mount(
        "postgres",
        "/docker-entrypoint-initdb.d/10-create-grafana-reader.sh",
    );
    assert_eq!(init, "./grafana/postgres/create-grafana-reader.sh");

    // Every variable compose reads is documented in .env.example.
    let env_example = read(".env.example");
    let documented: BTreeSet<String> = env_example
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    let text = read("docker-compose.yml");
    let mut used = BTreeSet::new();
    for piece in text.split("${").skip(1) {
        let name: String = piece
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        used.insert(name);
    }
    for (key, value) in environment(&services["exporter"]) {
        if value.is_none() {
            used.insert(key);
        }
    }
    for name in used {
        assert!(
            documented.contains(&name),
            "docker-compose.yml reads {name}, which .env.example does not document"
        );
    }

    // Dockerfile: multi-stage, runs as a non-root user.
    let froms = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(froms >= 2, "the Dockerfile should be multi-stage");
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("the Dockerfile should switch to a non-root USER");
    assert!(
        !matches!(user.trim(), "root" | "0" | "0:0"),
        "the image runs as {user}"
    );
}
