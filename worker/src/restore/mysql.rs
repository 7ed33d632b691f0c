//! A dump into a MySQL or MariaDB volume's database: spooled to an unnamed
//! temporary file while it is hashed, then fed to the `mariadb` client.
//!
//! MySQL commits every `CREATE`/`DROP` on its own, so a dump cannot be
//! loaded in one transaction: a load that fails half-way leaves the
//! database partly restored. That is why the whole dump is read and
//! checked (checksum, and that it ends with the client's "Dump completed"
//! line) before anything connects, why the safety backup comes first, and
//! why a failure names that safety backup.

use cairn_core::format::mysql;

use crate::volumes::database_connection;

use super::database::spool;
use super::*;

impl Restore<'_> {
    /// A dump into the volume's database:
    /// 1. read the volume's connection settings and password;
    /// 2. spool the download to an unnamed temporary file while hashing it,
    ///    hold the hash to the record, and read it through (its tables and
    ///    rows counted, its end checked);
    /// 3. a dry run stops there, having connected to nothing;
    /// 4. check the server's address against the policy, once;
    /// 5. take the safety backup of the database as it is;
    /// 6. feed the dump to the client, then count the tables' rows.
    pub(super) async fn mysql(
        &self,
        attempt: &mut Attempt,
        input: Input,
    ) -> Result<Value, Failure> {
        let cairn = &self.worker.cairn;
        let dry_run = attempt.model.dry_run;
        let (settings, password) = database_connection(cairn, &self.destination.volume)?;
        let (name, identity, expected, cancel) = (
            input.name,
            input.identity.clone(),
            input.expected.clone(),
            input.cancel.clone(),
        );
        let (file, size) = self
            .read_with_fallback(
                attempt,
                input,
                || Ok(()),
                |input| {
                    let (expected, cancel) = (input.expected.clone(), input.cancel.clone());
                    async move { spool(input.reader, &expected, &cancel).await }
                },
            )
            .await?;
        // A clone shares the file's offset: the load below rewinds it.
        let reread = file.try_clone().map_err(internal)?;
        let scan_identity = identity.clone();
        let (bytes, tables) = tokio::task::spawn_blocking(move || {
            let plain = read::open(reread, name, scan_identity.as_ref()).map_err(read_failure)?;
            mysql::scan(plain).map_err(|reason| Failure::new(FailureCode::ArchiveDamaged, reason))
        })
        .await
        .map_err(internal)??;
        let rows: u64 = tables.iter().map(|t| t.rows).sum();
        attempt.note(
            "info",
            format!(
                "checksum verified ({size} bytes); the dump holds {bytes} bytes of SQL, {} tables, {rows} rows",
                tables.len()
            ),
        );
        let target = format!(
            "MySQL database {:?} at {}:{}",
            settings.database, settings.host, settings.port
        );
        let mut summary = json!({
            "destination": target,
            "sha256": expected,
            "storedBytes": size,
            "dumpBytes": bytes,
        });
        if dry_run {
            if let Some(object) = summary.as_object_mut() {
                object.insert("tables".into(), json!(tables));
            }
            return Ok(summary);
        }
        let hostaddr = mysql::resolve_host(&cairn_core::storage::address_policy(cairn), &settings)
            .await
            .map_err(Failure::from)?;
        // The login is tried before the safety backup and the load, so a
        // wrong password fails with its own code and nothing touched.
        drop(
            mysql::connect(
                &settings,
                Some(hostaddr),
                password.as_ref(),
                FailureCode::MysqlConnectionFailed,
            )
            .await?,
        );
        let safety = if attempt.model.safety_backup {
            Some(self.safety_backup(attempt).await?)
        } else {
            None
        };
        attempt.note("info", format!("loading the dump into {target}"));
        let program = cairn.config.mysql.clone();
        let (load_settings, load_password, load_cancel) =
            (settings.clone(), password.clone(), cancel.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            let mut file = file;
            file.rewind().map_err(internal)?;
            let mut plain = read::open(file, name, identity.as_ref()).map_err(read_failure)?;
            mysql::load(
                &mut plain,
                &program,
                &load_settings,
                Some(hostaddr),
                load_password.as_ref(),
                &load_cancel,
            )
            .map_err(|message| Failure::new(FailureCode::MysqlRestoreFailed, message))
        })
        .await
        .map_err(internal)?;
        let partly = match safety {
            Some(id) => format!(
                "the database may be partly restored (MySQL cannot roll back a dump's DDL); \
                 safety backup {id} holds it as it was before"
            ),
            None => "the database may be partly restored (MySQL cannot roll back a dump's DDL), \
                     and no safety backup was taken"
                .to_owned(),
        };
        if cancel.is_cancelled() {
            return Err(Failure::new(
                FailureCode::Interrupted,
                format!("the worker was stopped while the dump was loading; {partly}"),
            ));
        }
        let fed = loaded.map_err(|failure| {
            Failure::new(failure.code, format!("{}; {partly}", failure.message))
        })?;
        attempt.note("info", format!("loaded {fed} bytes of SQL into {target}"));
        // What the database holds now, against what the dump held.
        let mut connection = mysql::connect(
            &settings,
            Some(hostaddr),
            password.as_ref(),
            FailureCode::MysqlConnectionFailed,
        )
        .await?;
        match mysql::count_tables(&mut connection).await {
            Ok(restored) => {
                let differ: Vec<String> = tables
                    .iter()
                    .filter(|t| {
                        !restored
                            .iter()
                            .any(|r| r.name == t.name && r.rows == t.rows)
                    })
                    .map(|t| t.name.clone())
                    .collect();
                if differ.is_empty() {
                    attempt.note(
                        "info",
                        format!("every table holds the rows of the dump ({rows} rows)"),
                    );
                } else {
                    attempt.note(
                        "warn",
                        format!(
                            "tables whose rows differ from the dump's (written to since?): {}",
                            differ.join(", ")
                        ),
                    );
                }
                if let Some(object) = summary.as_object_mut() {
                    object.insert("tables".into(), json!(restored));
                }
            }
            Err(error) => attempt.note(
                "warn",
                format!(
                    "counting the restored rows failed: {}",
                    mysql::describe(&error)
                ),
            ),
        }
        Ok(summary)
    }
}
