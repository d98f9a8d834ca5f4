//! The manifests as kustomize renders them, parsed, and the external tools.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

pub const MANIFESTS: &str = "deploy/kubernetes";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The path of a required tool; fails (never skips) with how to install it.
pub fn tool(name: &str) -> PathBuf {
    let install = match name {
        "kubectl" => "apt-get install -y kubernetes-client (its kubectl has kustomize built in)",
        "python3" => "apt-get install -y python3 python3-pip",
        _ => "python3 -m pip install kubernetes-validate check-jsonschema",
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH; the Kubernetes tests need it. Install it with \
                 `{install}` (scripts/test.sh does this on a fresh machine)."
            )
        })
}

/// Runs a command with `stdin` as its input; its stdout, or a panic with its output
/// unless it exits 0.
pub fn run(cmd: &mut Command, stdin: &[u8], what: &str) -> String {
    use std::io::Write;
    let mut child = cmd
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: could not start {cmd:?}: {e}"));
    // A tool that exits without reading its input is judged by its exit status below.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What `kubectl apply -k deploy/kubernetes` would send, as YAML.
pub fn rendered_yaml() -> String {
    run(
        Command::new(tool("kubectl")).args(["kustomize", MANIFESTS]),
        b"",
        "kubectl kustomize deploy/kubernetes",
    )
}

/// YAML documents as JSON values, read by PyYAML (the crate has no YAML parser).
pub fn parse_yaml(yaml: &str) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)";
    let json = run(
        Command::new(tool("python3")).args(["-c", script]),
        yaml.as_bytes(),
        "reading YAML with PyYAML (python3 -m pip install pyyaml)",
    );
    serde_json::from_str(&json).unwrap()
}

/// The rendered objects.
pub fn rendered() -> Vec<Value> {
    parse_yaml(&rendered_yaml())
}

/// The one rendered object of `kind`.
pub fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let mut of_kind = objects.iter().filter(|o| o["kind"] == kind);
    let one = of_kind
        .next()
        .unwrap_or_else(|| panic!("no {kind} in {MANIFESTS}"));
    assert!(of_kind.next().is_none(), "more than one {kind}");
    one
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
