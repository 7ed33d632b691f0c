//! Secrets at rest: AES-256-GCM under the master key.
//!
//! A sealed value is `base64(nonce ‖ ciphertext ‖ tag)` with a fresh random
//! 96-bit nonce per seal. The row's id is the associated data, so a sealed
//! value copied into another row does not open.

use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

const NONCE_LEN: usize = 12;

/// The key that seals every secret stored in the database.
#[derive(Clone)]
pub struct MasterKey(Key<Aes256Gcm>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Where the master key of a process came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Configured,
    KeyFile,
    Generated,
}

impl MasterKey {
    /// Decodes a base64 key of exactly 32 bytes.
    pub fn from_base64(encoded: &str) -> anyhow::Result<MasterKey> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| anyhow!("the master key is not valid base64"))?;
        if bytes.len() != 32 {
            bail!(
                "the master key must be 32 bytes (base64-encoded), not {}",
                bytes.len()
            );
        }
        Ok(MasterKey(*Key::<Aes256Gcm>::from_slice(&bytes)))
    }

    /// A new random key.
    pub fn generate() -> MasterKey {
        MasterKey(Aes256Gcm::generate_key(OsRng))
    }

    fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_slice())
    }

    /// The configured key; else the key file under `data_dir`; else, when
    /// `may_generate`, a new key written to that file with mode 0600.
    pub fn load(
        configured: Option<&SecretString>,
        data_dir: &Path,
        may_generate: bool,
    ) -> anyhow::Result<(MasterKey, KeySource)> {
        if let Some(configured) = configured {
            let key = MasterKey::from_base64(configured.expose_secret())
                .context("CAIRN_MASTER_KEY / master_key")?;
            return Ok((key, KeySource::Configured));
        }
        let path = data_dir.join("master.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let key = MasterKey::from_base64(&text)
                    .with_context(|| format!("reading {}", path.display()))?;
                return Ok((key, KeySource::KeyFile));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        }
        if !may_generate {
            bail!(
                "no master key: set CAIRN_MASTER_KEY (32 bytes, base64), \
                 shared by every replica, or create {}",
                path.display()
            );
        }
        crate::db::create_private_dir(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let key = MasterKey::generate();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(key.to_base64().as_bytes())?;
        file.sync_all()?;
        Ok((key, KeySource::Generated))
    }

    /// Seals `plaintext`, bound to the row `row_id`.
    pub fn seal(&self, row_id: Uuid, plaintext: &[u8]) -> String {
        let cipher = Aes256Gcm::new(&self.0);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: row_id.as_bytes(),
                },
            )
            // Encryption only fails for inputs beyond AES-GCM's length limit
            // (64 GiB); our secrets are a few KiB at most.
            .expect("AES-GCM encryption of a small secret cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        STANDARD.encode(sealed)
    }

    /// Opens a value sealed for the row `row_id`.
    pub fn open(&self, row_id: Uuid, sealed: &str) -> anyhow::Result<Vec<u8>> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| anyhow!("a sealed secret is not valid base64"))?;
        if bytes.len() < NONCE_LEN {
            bail!("a sealed secret is truncated");
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        Aes256Gcm::new(&self.0)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: row_id.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow!("a sealed secret does not open: wrong master key or a damaged value")
            })
    }

    /// Seals a row's secret fields as one JSON object; `None` when there
    /// are none (the column stays `NULL`).
    pub fn seal_fields(&self, row_id: Uuid, fields: &SecretFields) -> Option<String> {
        if fields.is_empty() {
            return None;
        }
        // A map of strings always serializes.
        let json = serde_json::to_vec(fields).expect("a map of strings serializes");
        Some(self.seal(row_id, &json))
    }

    /// Opens what [`MasterKey::seal_fields`] sealed (`None`: no fields).
    pub fn open_fields(&self, row_id: Uuid, sealed: Option<&str>) -> anyhow::Result<SecretFields> {
        match sealed {
            None => Ok(SecretFields::new()),
            Some(sealed) => {
                let bytes = self.open(row_id, sealed)?;
                serde_json::from_slice(&bytes).context("sealed secret fields are not a JSON object")
            }
        }
    }
}

/// The secret fields of one row (a target's `secretAccessKey`, a Slack
/// channel's `url`, …), sealed together under the row's id.
pub type SecretFields = std::collections::BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_bound_to_the_row() {
        let key = MasterKey::generate();
        let row = Uuid::now_v7();
        let sealed = key.seal(row, b"hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(key.open(row, &sealed).unwrap(), b"hunter2");
        assert!(key.open(Uuid::now_v7(), &sealed).is_err());
        assert!(MasterKey::generate().open(row, &sealed).is_err());
        // Two seals of one value differ (fresh nonce).
        assert_ne!(sealed, key.seal(row, b"hunter2"));
        // Fields: none stay NULL; some round-trip, bound to the row.
        assert_eq!(key.seal_fields(row, &SecretFields::new()), None);
        assert!(key.open_fields(row, None).unwrap().is_empty());
        let fields = SecretFields::from([("url".to_owned(), "https://x/secret".to_owned())]);
        let sealed = key.seal_fields(row, &fields).unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(key.open_fields(row, Some(&sealed)).unwrap(), fields);
        assert!(key.open_fields(Uuid::now_v7(), Some(&sealed)).is_err());
    }

    #[test]
    fn key_file_is_generated_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = MasterKey::load(None, dir.path(), true).unwrap();
        assert_eq!(source, KeySource::Generated);
        let (second, source) = MasterKey::load(None, dir.path(), true).unwrap();
        assert_eq!(source, KeySource::KeyFile);
        let row = Uuid::now_v7();
        assert_eq!(second.open(row, &first.seal(row, b"x")).unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("master.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn without_a_key_and_without_generation_loading_fails() {
        let dir = tempfile::tempdir().unwrap();
        assert!(MasterKey::load(None, dir.path(), false).is_err());
        let short = SecretString::from(STANDARD.encode([0u8; 16]));
        assert!(MasterKey::load(Some(&short), dir.path(), false).is_err());
    }
}
