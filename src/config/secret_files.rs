//! Secrets given directly or as files (CONTRACT §6.9): `<NAME>_FILE` names a file holding
//! the secret, as Docker and Kubernetes mount them. Every secret is trimmed, since a file's
//! final newline (or one pasted into an environment variable) would otherwise become part
//! of the key and fail every comparison.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;
use secrecy::{ExposeSecret, SecretString};

use super::Config;

/// Files to read secrets from, each instead of the variable it is named after.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(
    next_help_heading = "Secrets from files (each instead of the variable it names; \
                                whitespace around the secret is trimmed)"
)]
pub struct SecretFiles {
    /// File holding API_KEY.
    #[arg(long, env = "API_KEY_FILE", value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// File holding META_APP_SECRET.
    #[arg(long, env = "META_APP_SECRET_FILE", value_name = "PATH")]
    pub meta_app_secret_file: Option<PathBuf>,

    /// File holding META_VERIFY_TOKEN.
    #[arg(long, env = "META_VERIFY_TOKEN_FILE", value_name = "PATH")]
    pub meta_verify_token_file: Option<PathBuf>,

    /// File holding TWILIO_AUTH_TOKEN.
    #[arg(long, env = "TWILIO_AUTH_TOKEN_FILE", value_name = "PATH")]
    pub twilio_auth_token_file: Option<PathBuf>,

    /// File holding META_ACCESS_TOKEN.
    #[arg(long, env = "META_ACCESS_TOKEN_FILE", value_name = "PATH")]
    pub meta_access_token_file: Option<PathBuf>,

    /// File holding DATABASE_URL.
    #[arg(long, env = "DATABASE_URL_FILE", value_name = "PATH")]
    pub database_url_file: Option<PathBuf>,
}

impl Config {
    /// Reads each secret given as a file and trims every secret; refuses a secret given
    /// both ways, an unreadable file and an empty secret, naming the variable (and the
    /// path), never the contents.
    pub fn resolve_secrets(&mut self, matches: &ArgMatches) -> Result<(), String> {
        let files = &self.secret_files;
        resolve_secret(&mut self.api_key, "API_KEY", files.api_key_file.as_deref())?;
        resolve_secret(
            &mut self.meta_app_secret,
            "META_APP_SECRET",
            files.meta_app_secret_file.as_deref(),
        )?;
        resolve_secret(
            &mut self.meta_verify_token,
            "META_VERIFY_TOKEN",
            files.meta_verify_token_file.as_deref(),
        )?;
        resolve_secret(
            &mut self.twilio_auth_token,
            "TWILIO_AUTH_TOKEN",
            files.twilio_auth_token_file.as_deref(),
        )?;
        resolve_secret(
            &mut self.meta_access_token,
            "META_ACCESS_TOKEN",
            files.meta_access_token_file.as_deref(),
        )?;
        // DATABASE_URL has a default, which counts as not given.
        let given = matches.value_source("database_url") != Some(ValueSource::DefaultValue);
        let direct = given.then_some(self.database_url.as_str());
        if let Some(url) = resolve("DATABASE_URL", direct, files.database_url_file.as_deref())? {
            self.database_url = url;
        }
        Ok(())
    }
}

fn resolve_secret(
    secret: &mut Option<SecretString>,
    name: &str,
    file: Option<&Path>,
) -> Result<(), String> {
    let direct = secret.as_ref().map(ExposeSecret::expose_secret);
    *secret = resolve(name, direct, file)?.map(SecretString::from);
    Ok(())
}

/// The secret `name`, given directly or in `file` (at most one), trimmed.
fn resolve(
    name: &str,
    direct: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<String>, String> {
    let flag = name.to_lowercase().replace('_', "-");
    let value = match (direct, file) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{name} (--{flag}) and {name}_FILE (--{flag}-file) are both set: set only one"
            ))
        }
        (Some(value), None) => value.to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {name}_FILE {}: {e}", path.display()))?,
        (None, None) => return Ok(None),
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        let source = file.map_or(String::new(), |p| {
            format!(" (from {name}_FILE {})", p.display())
        });
        return Err(format!(
            "{name}{source} is empty: leave it unset, or give it a value"
        ));
    }
    Ok(Some(trimmed.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// A file with `contents` in the temporary directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "me-secret-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            );
            let path = std::env::temp_dir().join(name);
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn load(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["messaging-exporter"];
        all.extend_from_slice(args);
        let matches = Config::command().try_get_matches_from(all).unwrap();
        let mut config = Config::from_arg_matches(&matches).unwrap();
        config.resolve_secrets(&matches).map(|()| config)
    }

    fn exposed(secret: &Option<SecretString>) -> Option<&str> {
        secret.as_ref().map(ExposeSecret::expose_secret)
    }

    #[test]
    fn each_secret_is_read_from_its_file_without_the_final_newline() {
        let file = TempFile::new("  from-a-file\n");
        for flag in [
            "--api-key-file",
            "--meta-app-secret-file",
            "--meta-verify-token-file",
            "--twilio-auth-token-file",
            "--database-url-file",
        ] {
            let c = load(&[flag, file.path()]).unwrap();
            let read = [
                exposed(&c.api_key),
                exposed(&c.meta_app_secret),
                exposed(&c.meta_verify_token),
                exposed(&c.twilio_auth_token),
                Some(c.database_url.as_str()),
            ];
            assert_eq!(
                read.iter().filter(|s| **s == Some("from-a-file")).count(),
                1,
                "{flag}: {read:?}"
            );
        }
    }

    #[test]
    fn secrets_given_directly_are_trimmed_too() {
        let c = load(&[
            "--api-key",
            "0123456789abcdef\n",
            "--database-url",
            " sqlite://x.db\r\n",
        ])
        .unwrap();
        assert_eq!(exposed(&c.api_key), Some("0123456789abcdef"));
        assert_eq!(c.database_url, "sqlite://x.db");
    }

    #[test]
    fn a_secret_given_both_directly_and_as_a_file_is_refused() {
        let file = TempFile::new("0123456789abcdef");
        let err = load(&[
            "--api-key",
            "0123456789abcdef",
            "--api-key-file",
            file.path(),
        ])
        .unwrap_err();
        assert!(
            err.contains("API_KEY") && err.contains("API_KEY_FILE") && err.contains("both"),
            "{err}"
        );
        let err = load(&[
            "--database-url",
            "sqlite://a.db",
            "--database-url-file",
            file.path(),
        ])
        .unwrap_err();
        assert!(
            err.contains("DATABASE_URL_FILE") && err.contains("both"),
            "{err}"
        );
    }

    #[test]
    fn the_default_database_url_gives_way_to_its_file() {
        let file = TempFile::new("postgres://db/exporter\n");
        let c = load(&["--database-url-file", file.path()]).unwrap();
        assert_eq!(c.database_url, "postgres://db/exporter");
        assert_eq!(
            load(&[]).unwrap().database_url,
            "sqlite://messaging-exporter.db"
        );
    }

    #[test]
    fn an_unreadable_file_is_refused_naming_the_variable_and_path_not_the_contents() {
        let missing = std::env::temp_dir().join("me-secret-that-does-not-exist");
        let missing = missing.to_str().unwrap();
        let err = load(&["--twilio-auth-token-file", missing]).unwrap_err();
        assert!(
            err.contains("TWILIO_AUTH_TOKEN_FILE") && err.contains(missing),
            "{err}"
        );
        let not_text = TempFile::new("");
        std::fs::write(&not_text.0, b"secret-part\xff").unwrap();
        let err = load(&["--meta-app-secret-file", not_text.path()]).unwrap_err();
        assert!(
            err.contains("META_APP_SECRET_FILE") && err.contains(not_text.path()),
            "{err}"
        );
        assert!(!err.contains("secret-part"), "{err}");
    }

    #[test]
    fn a_secret_that_is_empty_after_trimming_is_refused() {
        let blank = TempFile::new(" \n");
        let err = load(&["--meta-verify-token-file", blank.path()]).unwrap_err();
        assert!(
            err.contains("META_VERIFY_TOKEN") && err.contains("empty"),
            "{err}"
        );
        let err = load(&["--meta-app-secret", "\n"]).unwrap_err();
        assert!(
            err.contains("META_APP_SECRET") && err.contains("empty"),
            "{err}"
        );
    }
}
