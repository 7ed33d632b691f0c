//! Feeding a plain (decrypted) dump to `pg_restore`: into a database, or
//! `--list` for its table of contents.

use std::io::Read;
use std::path::Path;

/// A `postgres://user:password@host:port/database` URL split into the
/// connection settings and the password (which goes to the environment,
/// never to argv). Messages name the URL `what` (`--dbname`, a key of the
/// configuration), never its text.
pub fn parse_database_url(
    what: &str,
    text: &str,
) -> Result<
    (
        crate::apps::ConnectionSettings,
        Option<secrecy::SecretString>,
    ),
    String,
> {
    let (mut settings, password) =
        crate::apps::ConnectionSettings::from_url(what, text, &["postgres", "postgresql"], 5432)?;
    if settings.database.is_empty() {
        return Err(format!("{what} names no database"));
    }
    if settings.username.is_empty() {
        settings.username = "postgres".into();
    }
    Ok((settings, password))
}

/// What `pg_restore` does with a dump.
pub enum PgRestore<'a> {
    /// `--clean --if-exists --no-owner --single-transaction` into a
    /// database (restored whole or left unchanged), the connection given as
    /// one quoted string and the password through `PGPASSWORD` (never argv).
    Into {
        settings: &'a crate::apps::ConnectionSettings,
        /// The checked address to connect to (`hostaddr`); `None` for the
        /// operator's offline tool, which connects where it is told.
        hostaddr: Option<std::net::IpAddr>,
        password: Option<&'a secrecy::SecretString>,
    },
    /// Into a fresh scratch database of a verification: `--no-owner
    /// --no-privileges --no-tablespaces --no-publications
    /// --no-subscriptions --single-transaction`, so nothing of the source
    /// server (its roles, tablespaces, replication) is needed or reached.
    Scratch {
        settings: &'a crate::apps::ConnectionSettings,
        password: Option<&'a secrecy::SecretString>,
    },
    /// `--list`: the table of contents, printed; nothing is connected to.
    List,
}

/// Streams a plain (decrypted) dump into `pg_restore`; returns the bytes
/// fed, and for [`PgRestore::List`] the listing. `cancel` kills pg_restore.
pub fn pg_restore(
    mut plain: impl Read,
    action: PgRestore<'_>,
    program: &Path,
    cancel: &crate::storage::Cancellation,
) -> Result<u64, String> {
    pg_restore_with_output(&mut plain, action, program, cancel).map(|(bytes, _)| bytes)
}

/// [`pg_restore`], also returning what pg_restore printed.
pub fn pg_restore_with_output(
    plain: &mut dyn Read,
    action: PgRestore<'_>,
    program: &Path,
    cancel: &crate::storage::Cancellation,
) -> Result<(u64, String), String> {
    use secrecy::ExposeSecret;
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut command = Command::new(program);
    for name in crate::format::pg_dump::libpq_variables() {
        command.env_remove(name);
    }
    let listing = matches!(action, PgRestore::List);
    match action {
        PgRestore::Into {
            settings,
            hostaddr,
            password,
        } => {
            command
                .args([
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--single-transaction",
                ])
                .arg(format!(
                    "--dbname={}",
                    crate::format::pg_dump::conninfo(settings, hostaddr)
                ));
            if let Some(password) = password {
                command.env("PGPASSWORD", password.expose_secret());
            }
        }
        PgRestore::Scratch { settings, password } => {
            command
                .args([
                    "--no-owner",
                    "--no-privileges",
                    "--no-tablespaces",
                    "--no-publications",
                    "--no-subscriptions",
                    "--single-transaction",
                ])
                .arg(format!(
                    "--dbname={}",
                    crate::format::pg_dump::conninfo(settings, None)
                ));
            if let Some(password) = password {
                command.env("PGPASSWORD", password.expose_secret());
            }
        }
        PgRestore::List => {
            command.arg("--list");
        }
    }
    command
        .stdin(Stdio::piped())
        .stdout(if listing {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("{} cannot be run: {e}", program.display()))?;
    let collect = |stream: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let errors = collect(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let output = collect(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| "pg_restore's input is not writable".to_owned())?;
    let mut fed = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut read_error = None;
    loop {
        if cancel.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the restore was stopped; pg_restore was killed".into());
        }
        let n = match plain.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) => {
                read_error = Some(error);
                break;
            }
        };
        // pg_restore --list stops reading after the table of contents.
        if stdin.write_all(&buffer[..n]).is_err() {
            break;
        }
        fed += n as u64;
    }
    drop(stdin);
    if let Some(error) = read_error {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("reading the dump: {error}"));
    }
    let status = loop {
        if cancel.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the restore was stopped; pg_restore was killed".into());
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(error) => return Err(format!("waiting for pg_restore: {error}")),
        }
    };
    let errors = errors.join().unwrap_or_default();
    let output = output.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("pg_restore failed ({status}): {}", errors.trim()));
    }
    Ok((fed, output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_split_into_settings_and_a_password() {
        use secrecy::ExposeSecret;
        let (settings, password) = parse_database_url(
            "--dbname",
            "postgres://app%40x:p%3Ass@db.internal:5433/shop%20db",
        )
        .unwrap();
        assert_eq!(settings.host, "db.internal");
        assert_eq!(settings.port, 5433);
        assert_eq!(settings.username, "app@x");
        assert_eq!(settings.database, "shop db");
        assert_eq!(password.unwrap().expose_secret(), "p:ss");
        let (settings, password) = parse_database_url("--dbname", "postgresql://h/d").unwrap();
        assert_eq!(
            (settings.port, settings.username.as_str()),
            (5432, "postgres")
        );
        assert!(password.is_none());
        assert!(parse_database_url("--dbname", "mysql://h/d").is_err());
        assert!(parse_database_url("--dbname", "postgres://h/").is_err());
    }
}
