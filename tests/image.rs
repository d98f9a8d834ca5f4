//! The image's build context is complete (no Docker engine here): the files the
//! Dockerfile's build stage COPYs, less what `.dockerignore` leaves out, are assembled in a
//! directory of their own, where cargo must read the whole workspace (`cargo metadata
//! --locked --offline`) and every file the sources read while compiling must be present.
//!
//! A `cargo check` there would take some 40 s and, since cargo names a workspace's own
//! build units by their path within the workspace, overwrite the checkout's artifacts in
//! a shared target directory (the next build of the checkout recompiles the crate): the
//! compile-time inputs are checked by reading the sources instead.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One `COPY` of the build stage: context paths and where they land, relative to `WORKDIR`.
#[derive(Debug)]
struct Copy {
    sources: Vec<String>,
    dest: String,
}

/// The Dockerfile's instructions, continuation lines joined and comments dropped.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// The COPYs from the build context in the stages before the last (the build stages), with
/// destinations made relative to the stage's `WORKDIR`.
fn build_stage_copies(dockerfile: &str) -> Vec<Copy> {
    let instructions = instructions(dockerfile);
    let last_from = instructions
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .expect("the Dockerfile has a FROM");
    let mut workdir = String::from("/");
    let mut copies = Vec::new();
    for instruction in &instructions[..last_from] {
        let (keyword, rest) = instruction.split_once(' ').unwrap_or((instruction, ""));
        match keyword {
            "WORKDIR" => workdir = rest.trim().trim_end_matches('/').to_owned() + "/",
            "COPY" | "ADD" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                if words.iter().any(|w| w.starts_with("--from")) {
                    continue;
                }
                let words: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
                let (dest, sources) = words.split_last().expect("COPY names a destination");
                assert!(
                    !sources.iter().any(|s| s.contains(['*', '?', '['])),
                    "tests/image.rs does not expand globs in COPY sources: {instruction}"
                );
                let dest = match dest.strip_prefix(&workdir) {
                    Some(relative) => relative.to_owned(),
                    None if dest.starts_with('/') => {
                        panic!("{instruction}: copies outside WORKDIR {workdir}")
                    }
                    None => dest.to_string(),
                };
                copies.push(Copy {
                    sources: sources.iter().map(|s| s.to_string()).collect(),
                    dest,
                });
            }
            _ => {}
        }
    }
    copies
}

/// `.dockerignore` as Docker reads it: the last pattern that matches a path, or one of its
/// parent directories, decides; `!` lets a path back in.
struct DockerIgnore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (keep, pattern) = match l.strip_prefix('!') {
                    Some(p) => (true, p),
                    None => (false, l),
                };
                assert!(
                    !pattern.contains('['),
                    "character classes are not supported: {l}"
                );
                let segments = pattern
                    .trim_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_owned)
                    .collect();
                (keep, segments)
            })
            .collect();
        Self { patterns }
    }

    fn excludes(&self, path: &str) -> bool {
        let segments: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for (keep, pattern) in &self.patterns {
            let matches = (1..=segments.len()).any(|n| path_matches(pattern, &segments[..n]));
            if matches {
                excluded = !keep;
            }
        }
        excluded
    }
}

fn path_matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            path_matches(rest, path) || (!path.is_empty() && path_matches(pattern, &path[1..]))
        }
        Some((first, rest)) => {
            !path.is_empty()
                && segment_matches(first.as_bytes(), path[0].as_bytes())
                && path_matches(rest, &path[1..])
        }
    }
}

/// `*` and `?` within one path segment.
fn segment_matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| segment_matches(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && segment_matches(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && segment_matches(rest, &name[1..]),
    }
}

/// The files under `relative` (a file or a directory of the context) that the context holds.
fn context_files(relative: &str, ignore: &DockerIgnore) -> Vec<String> {
    let full = Path::new(ROOT).join(relative);
    if full.is_file() {
        return if ignore.excludes(relative) {
            vec![]
        } else {
            vec![relative.to_owned()]
        };
    }
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&full)
        .unwrap_or_else(|e| panic!("COPY {relative}: not in the repository ({e})"));
    for entry in entries {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        out.extend(context_files(&format!("{relative}/{name}"), ignore));
    }
    out
}

/// Copies what each COPY brings from the context into `dir`, as Docker does: a
/// directory's contents into the destination, a file into it when it ends with `/`.
fn assemble(copies: &[Copy], ignore: &DockerIgnore, dir: &Path) {
    for copy in copies {
        for source in &copy.sources {
            let source = source.trim_start_matches("./").trim_end_matches('/');
            let files = context_files(source, ignore);
            assert!(
                !files.is_empty(),
                "COPY {source}: excluded by .dockerignore or empty"
            );
            let is_dir = Path::new(ROOT).join(source).is_dir();
            for file in files {
                let target = if is_dir {
                    dir.join(&copy.dest)
                        .join(file.strip_prefix(source).unwrap().trim_start_matches('/'))
                } else if copy.dest.ends_with('/') || copy.sources.len() > 1 {
                    dir.join(&copy.dest)
                        .join(Path::new(&file).file_name().unwrap())
                } else {
                    dir.join(&copy.dest)
                };
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::copy(Path::new(ROOT).join(&file), &target).unwrap();
            }
        }
    }
}

fn cargo_metadata(dir: &Path) -> serde_json::Value {
    let args = [
        "metadata",
        "--locked",
        "--offline",
        "--format-version",
        "1",
        "--filter-platform",
        &host_triple(),
    ];
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo {args:?} fails on the image's build context: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `.rs` files under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// What the sources under `dir` read while compiling: `sqlx::migrate!`'s directory,
/// relative to the package, and `include_str!`/`include_bytes!`, relative to the file.
fn compile_time_inputs(dir: &Path) -> Vec<PathBuf> {
    let mut inputs = Vec::new();
    for file in rust_files(dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        let package = file
            .ancestors()
            .find(|d| d.join("Cargo.toml").is_file())
            .unwrap();
        for (call, base) in [
            ("migrate!(\"", package),
            ("include_str!(\"", file.parent().unwrap()),
            ("include_bytes!(\"", file.parent().unwrap()),
        ] {
            for (at, _) in text.match_indices(call) {
                let rest = &text[at + call.len()..];
                let literal = &rest[..rest.find('"').unwrap()];
                inputs.push(base.join(literal));
            }
        }
    }
    inputs
}

fn host_triple() -> String {
    let out = Command::new("rustc").arg("-vV").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

#[test]
fn cargo_reads_the_workspace_from_what_the_dockerfile_copies() {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let ignore = std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).unwrap_or_default();
    let context = Context::new();
    assemble(
        &build_stage_copies(&dockerfile),
        &DockerIgnore::parse(&ignore),
        &context.0,
    );

    let metadata = cargo_metadata(&context.0);
    let members = metadata["workspace_members"].as_array().unwrap();
    assert!(
        members
            .iter()
            .any(|m| m.as_str().unwrap().contains("messaging-exporter")),
        "{members:?}"
    );
    let inputs = compile_time_inputs(&context.0);
    assert!(
        inputs.iter().any(|p| p.ends_with("migrations")),
        "sqlx::migrate! not found in the sources: {inputs:?}"
    );
    let missing: Vec<_> = inputs.iter().filter(|p| !p.exists()).collect();
    assert!(
        missing.is_empty(),
        "the image's build context lacks {missing:?}"
    );
}

/// sqlx's rustls adds `webpki_roots::TLS_SERVER_ROOTS` to every Postgres root store: the
/// copy sqlx is built with must be the stand-in with no roots, so that `sslrootcert` is
/// the only CA trusted, as in libpq. (The relay's HTTPS client rightly keeps Mozilla's.)
#[test]
fn postgres_tls_trusts_no_public_ca_beside_sslrootcert() {
    let metadata = cargo_metadata(Path::new(ROOT));
    let packages = metadata["packages"].as_array().unwrap();
    let id_of = |name: &str| -> Vec<&str> {
        packages
            .iter()
            .filter(|p| p["name"] == name)
            .map(|p| p["id"].as_str().unwrap())
            .collect()
    };
    let sqlx_core = id_of("sqlx-core");
    let roots: Vec<&str> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| sqlx_core.contains(&node["id"].as_str().unwrap()))
        .flat_map(|node| node["dependencies"].as_array().unwrap())
        .map(|dep| dep.as_str().unwrap())
        .filter(|dep| id_of("webpki-roots").contains(dep))
        .collect();
    assert!(
        !roots.is_empty(),
        "sqlx is built without rustls's webpki roots"
    );
    for id in roots {
        let package = packages.iter().find(|p| p["id"] == id).unwrap();
        assert!(
            package["manifest_path"]
                .as_str()
                .unwrap()
                .ends_with("third_party/webpki-roots/Cargo.toml"),
            "sqlx trusts Mozilla's roots beside sslrootcert: {id}"
        );
    }
}

/// The assembled build context, removed on drop.
struct Context(PathBuf);

impl Context {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("me_image_context_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn dockerignore_patterns_match_as_docker_matches_them() {
    let ignore = DockerIgnore::parse("*\n!src\n**/target\n!keep/**/*.rs\n");
    assert!(ignore.excludes(".env"));
    assert!(ignore.excludes("tests/api/main.rs"));
    assert!(!ignore.excludes("src/store/mod.rs"));
    assert!(ignore.excludes("src/target/x"));
    assert!(ignore.excludes("keep/a/b.txt"));
    assert!(!ignore.excludes("keep/a/b.rs"));
}
