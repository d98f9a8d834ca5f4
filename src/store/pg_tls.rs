//! `DATABASE_URL`'s TLS settings read as libpq reads them (CONTRACT §6.11), written back
//! into the URL as the explicit `sslmode` and `sslrootcert` that sqlx acts on.
//!
//! sqlx parses both parameters but departs from libpq in a few places; each rule below
//! closes one gap ([libpq's table](https://www.postgresql.org/docs/current/libpq-ssl.html#LIBPQ-SSL-SSLMODE-STATEMENTS)):
//! - `require` with a root certificate verifies the chain, as `verify-ca` does (sqlx
//!   would check nothing);
//! - `verify-ca` and `verify-full` need a root certificate, libpq's default
//!   `~/.postgresql/root.crt` if none is named (sqlx would use its built-in roots);
//! - that root certificate is the only CA trusted: sqlx would add Mozilla's roots beside
//!   it, which `third_party/webpki-roots` replaces with none;
//! - `sslrootcert=system` means the system's CA bundle and insists on `verify-full`
//!   (sqlx would read a file named `system`);
//! - `allow` tries TLS first, as `prefer` does (sqlx never tries it);
//! - a Unix socket ignores `sslmode` (sqlx would ask the socket for TLS and fail).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use url::Url;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> anyhow::Result<Self> {
        Ok(match value {
            "disable" => Self::Disable,
            // libpq's `allow` tries a plain connection first and TLS second; trying TLS
            // first connects wherever `allow` would, and encrypts where it can.
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => bail!(
                "DATABASE_URL: sslmode must be disable, allow, prefer, require, verify-ca \
                 or verify-full, not {other:?}"
            ),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn verifies(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }
}

/// What the exporter connects to Postgres with, once libpq's rules are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgTls {
    pub mode: SslMode,
    /// The CA certificates the server's chain must lead to (`verify-*` only).
    pub root_cert: Option<PathBuf>,
}

impl fmt::Display for PgTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sslmode={}", self.mode.as_str())?;
        if let Some(path) = &self.root_cert {
            write!(f, ", sslrootcert={}", path.display())?;
        }
        Ok(())
    }
}

/// Where OpenSSL, and so libpq, finds the system's trusted CAs: Debian, Ubuntu and
/// Alpine; Fedora and RHEL; macOS and the BSDs.
const SYSTEM_CA_FILES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The URL's parameters that this module decides; any other is left to sqlx.
const TLS_KEYS: [&str; 5] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
];

/// `url` with libpq's TLS rules applied, and what they came to. `env` reads the
/// environment (`PGSSLMODE`, `PGSSLROOTCERT`, `HOME`, `SSL_CERT_FILE`), as libpq does.
/// No error names the URL itself, which may hold a password.
pub fn apply(url: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<(String, PgTls)> {
    let mut url = Url::parse(url).context("DATABASE_URL is not a valid URL")?;
    let tls = resolve(&url, env)?;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| !TLS_KEYS.contains(&key.as_ref()))
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let mut query = url.query_pairs_mut();
    query.clear().extend_pairs(kept);
    query.append_pair("sslmode", tls.mode.as_str());
    if let Some(path) = &tls.root_cert {
        query.append_pair("sslrootcert", &path.to_string_lossy());
    }
    drop(query);
    Ok((url.into(), tls))
}

fn resolve(url: &Url, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<PgTls> {
    let param = |names: &[&str]| {
        url.query_pairs()
            .filter(|(key, _)| names.contains(&key.as_ref()))
            .map(|(_, value)| value.into_owned())
            .last()
    };
    // sqlx would log the unknown parameter with its value: a key's passphrase.
    if param(&["sslpassword"]).is_some() {
        bail!(
            "DATABASE_URL: sslpassword (a passphrase for an encrypted sslkey) is not \
             supported; give sslkey an unencrypted key, readable by the exporter only"
        );
    }
    let on_socket = param(&["host"]).is_some_and(|host| host.starts_with('/'));
    if on_socket {
        return Ok(PgTls {
            mode: SslMode::Disable,
            root_cert: None,
        });
    }
    let explicit_mode = param(&["sslmode", "ssl-mode"])
        .or_else(|| env("PGSSLMODE"))
        .map(|mode| SslMode::parse(&mode))
        .transpose()?;
    let root = param(&["sslrootcert", "ssl-root-cert", "ssl-ca"]).or_else(|| env("PGSSLROOTCERT"));
    if root.as_deref() == Some("system") {
        return system_roots(explicit_mode, env);
    }
    let mode = explicit_mode.unwrap_or(SslMode::Prefer);
    let root = match root {
        Some(path) => Some(PathBuf::from(path)),
        // libpq's default root certificate, used when it exists.
        None => env("HOME")
            .map(|home| Path::new(&home).join(".postgresql/root.crt"))
            .filter(|path| path.exists()),
    };
    match (mode, root) {
        (SslMode::Require | SslMode::VerifyCa, Some(root)) => verified(SslMode::VerifyCa, root),
        (SslMode::VerifyFull, Some(root)) => verified(SslMode::VerifyFull, root),
        (mode, None) if mode.verifies() => bail!(
            "DATABASE_URL: sslmode={} needs sslrootcert: the path of the CA certificate that \
             signed the server's, or sslrootcert=system for the system's trusted CAs \
             (or a weaker sslmode, which does not verify the server)",
            mode.as_str()
        ),
        // Without verification a root certificate has nothing to do.
        (mode, _) => Ok(PgTls {
            mode,
            root_cert: None,
        }),
    }
}

/// `sslrootcert=system`: the system's CA bundle, with host names checked (libpq 16).
fn system_roots(
    explicit_mode: Option<SslMode>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<PgTls> {
    let mode = explicit_mode.unwrap_or(SslMode::VerifyFull);
    if mode != SslMode::VerifyFull {
        bail!(
            "DATABASE_URL: sslmode={} may not be used with sslrootcert=system: use \
             sslmode=verify-full, as any certificate a public CA signed would pass otherwise",
            mode.as_str()
        );
    }
    let file = env("SSL_CERT_FILE")
        .map(PathBuf::from)
        .or_else(|| {
            SYSTEM_CA_FILES
                .iter()
                .map(PathBuf::from)
                .find(|path| path.exists())
        })
        .context(
            "DATABASE_URL: sslrootcert=system, but no system CA bundle was found \
             (install ca-certificates, or set SSL_CERT_FILE)",
        )?;
    verified(SslMode::VerifyFull, file)
}

/// A verifying mode, once its root certificate file is known to be readable: sqlx would
/// report a missing file as a failure to communicate with the database.
fn verified(mode: SslMode, root: PathBuf) -> anyhow::Result<PgTls> {
    std::fs::File::open(&root).with_context(|| {
        format!(
            "DATABASE_URL: cannot read sslrootcert {} (sslmode={})",
            root.display(),
            mode.as_str()
        )
    })?;
    Ok(PgTls {
        mode,
        root_cert: Some(root),
    })
}

/// A failed first connection, with what it means for TLS when that is the cause.
pub fn connect_error(err: sqlx::Error, tls: &PgTls) -> anyhow::Error {
    // rustls reports a refused certificate through the socket, as an I/O error.
    let text = err.to_string();
    let hint = match &err {
        sqlx::Error::Tls(_) if text.contains("does not support TLS") => format!(
            "connecting to the Postgres database: the server does not offer TLS, \
             which {tls} insists on"
        ),
        sqlx::Error::Tls(_) | sqlx::Error::Io(_) if text.contains("not valid for name") => {
            format!(
                "connecting to the Postgres database over TLS ({tls}): the server's \
                 certificate does not name the host of DATABASE_URL; connect by a name it \
                 holds (sqlx 0.8 checks the name under verify-ca too, sqlx issue 3793)"
            )
        }
        sqlx::Error::Tls(_) | sqlx::Error::Io(_) if text.contains("certificate") => format!(
            "connecting to the Postgres database over TLS ({tls}): the server's certificate \
             was refused; sslrootcert must hold the CA that signed it"
        ),
        sqlx::Error::Tls(_) => format!(
            "connecting to the Postgres database over TLS ({tls}): the TLS handshake failed"
        ),
        sqlx::Error::Database(db)
            if db.code().as_deref() == Some("28000") && db.message().contains("no encryption") =>
        {
            format!(
                "connecting to the Postgres database ({tls}): the server accepts only TLS \
                 connections; set sslmode=require, or verify-full with sslrootcert, in \
                 DATABASE_URL"
            )
        }
        _ => format!("connecting to the Postgres database ({tls})"),
    };
    // sqlx's message already ends with its cause's: keeping the cause as a source of its
    // own would print it twice.
    anyhow::anyhow!("{text}").context(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(vars: &'a [(&'static str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.clone())
        }
    }

    fn ca_file() -> (tempfile_dir::Dir, String) {
        let dir = tempfile_dir::Dir::new();
        let path = dir.0.join("ca.pem");
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let path = path.to_str().unwrap().to_owned();
        (dir, path)
    }

    /// A directory removed on drop, for a root certificate file to exist in.
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let path = std::env::temp_dir().join(format!(
                    "pg_tls_{}_{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn tls_of(url: &str, vars: &[(&'static str, String)]) -> anyhow::Result<PgTls> {
        apply(url, &env_of(vars)).map(|(_, tls)| tls)
    }

    #[test]
    fn without_sslmode_tls_is_preferred_as_by_libpq() {
        let tls = tls_of("postgres://u@db/x", &[]).unwrap();
        assert_eq!(tls.mode, SslMode::Prefer);
        assert_eq!(tls.root_cert, None);
    }

    #[test]
    fn require_with_a_root_certificate_verifies_the_chain() {
        let (_dir, ca) = ca_file();
        let tls = tls_of(
            &format!("postgres://u@db/x?sslmode=require&sslrootcert={ca}"),
            &[],
        )
        .unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.root_cert, Some(PathBuf::from(&ca)));
    }

    #[test]
    fn libpqs_default_root_certificate_in_home_is_used_when_present() {
        let (dir, _) = ca_file();
        std::fs::create_dir_all(dir.0.join(".postgresql")).unwrap();
        std::fs::write(dir.0.join(".postgresql/root.crt"), "pem").unwrap();
        let home = [("HOME", dir.0.to_str().unwrap().to_owned())];
        let tls = tls_of("postgres://u@db/x?sslmode=require", &home).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.root_cert, Some(dir.0.join(".postgresql/root.crt")));
    }

    #[test]
    fn verifying_without_a_root_certificate_is_refused_with_the_fix() {
        for mode in ["verify-ca", "verify-full"] {
            let err = tls_of(&format!("postgres://u:pw@db/x?sslmode={mode}"), &[]).unwrap_err();
            let message = format!("{err:#}");
            assert!(message.contains("needs sslrootcert"), "{message}");
            assert!(!message.contains("pw"), "{message}");
        }
    }

    #[test]
    fn an_unreadable_root_certificate_is_named_at_start_up() {
        let err = tls_of(
            "postgres://u@db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            &[],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("cannot read sslrootcert /nonexistent/ca.pem"));
    }

    #[test]
    fn sslrootcert_system_is_the_system_bundle_and_insists_on_verify_full() {
        let (_dir, bundle) = ca_file();
        let env = [("SSL_CERT_FILE", bundle.clone())];
        let tls = tls_of("postgres://u@db/x?sslrootcert=system", &env).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from(bundle)));
        let err = tls_of("postgres://u@db/x?sslmode=require&sslrootcert=system", &env).unwrap_err();
        assert!(format!("{err}").contains("sslmode=require may not be used"));
    }

    #[test]
    fn the_environment_gives_what_the_url_does_not() {
        let (_dir, ca) = ca_file();
        let env = [
            ("PGSSLMODE", "verify-full".to_owned()),
            ("PGSSLROOTCERT", ca.clone()),
        ];
        assert_eq!(
            tls_of("postgres://u@db/x", &env).unwrap().mode,
            SslMode::VerifyFull
        );
        assert_eq!(
            tls_of("postgres://u@db/x?sslmode=disable", &env)
                .unwrap()
                .mode,
            SslMode::Disable
        );
    }

    #[test]
    fn allow_tries_tls_first_and_unknown_modes_are_refused() {
        assert_eq!(
            tls_of("postgres://u@db/x?sslmode=allow", &[]).unwrap().mode,
            SslMode::Prefer
        );
        let err = tls_of("postgres://u@db/x?sslmode=requre", &[]).unwrap_err();
        assert!(format!("{err}").contains("not \"requre\""));
    }

    #[test]
    fn a_key_passphrase_is_refused_without_being_repeated() {
        let err = tls_of("postgres://u@db/x?sslkey=/k.pem&sslpassword=hunter2", &[]).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("sslpassword"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn a_unix_socket_ignores_sslmode() {
        let tls = tls_of(
            "postgres:///x?host=/run/postgresql&sslmode=verify-full",
            &[],
        )
        .unwrap();
        assert_eq!(tls.mode, SslMode::Disable);
    }

    #[test]
    fn the_rewritten_url_keeps_everything_else_and_states_the_outcome() {
        let (_dir, ca) = ca_file();
        let raw = format!(
            "postgres://u:p%40ss@db:6432/x?application_name=me&ssl-mode=require&sslrootcert={ca}"
        );
        let (url, _) = apply(&raw, &env_of(&[])).unwrap();
        let encoded_ca: String = url::form_urlencoded::byte_serialize(ca.as_bytes()).collect();
        assert_eq!(
            url,
            format!(
                "postgres://u:p%40ss@db:6432/x?application_name=me&sslmode=verify-ca&sslrootcert={encoded_ca}"
            )
        );
    }
}
