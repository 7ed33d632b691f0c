//! The archive format: what Cairn stores for one backup and how it is read
//! back. Everything an operator needs to restore without Cairn is here, and
//! nothing here touches the database except the organization's age key pair
//! (`age`).
//!
//! - writing: `tar` (a file volume, walked and compressed), `pg_dump` (a
//!   PostgreSQL volume), `age` (encryption to the organization's key and
//!   extra recipients);
//! - describing: `names` (what a file name says it is, the sidecars beside
//!   it) and `manifest` (the typed, versioned `….manifest.json`);
//! - reading back: `read` (checksum, decryption, decompression, a full
//!   read), `extract` (entry-by-entry extraction that refuses escapes),
//!   `pg_restore`, and `offline` (the `cairn archive …` tools).
//!
//! Writers and readers run on blocking threads and exchange bounded queues
//! of chunks with the async side, so memory stays bounded whatever the size
//! of the archive.

pub mod age;
pub mod child;
pub mod extract;
pub mod manifest;
pub mod mysql;
pub mod names;
pub mod offline;
pub mod pg_dump;
pub mod pg_restore;
pub mod pg_tables;
pub mod read;
pub mod sqlite;
pub mod tar;
