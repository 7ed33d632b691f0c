//! Black-box tests of Cairn: the real API on a real port, against SQLite
//! and a real PostgreSQL (started by `scripts/test.sh`). One test binary.

mod helpers;

mod apps;
mod archive;
mod backups;
mod binary;
mod bodies;
mod catalog;
mod console;
mod copies;
mod deployments;
mod disk;
mod extract;
mod history;
mod jobs;
mod mysql_volumes;
mod notifications;
mod ops;
mod orgs;
mod orphans;
mod pages;
mod restores;
mod safety;
mod scale;
mod scheduler;
mod sqlite_volumes;
mod startup;
mod storage;
mod sweep;
mod system;
mod target_checks;
mod targets;
mod tenancy;
mod tokens;
mod verifications;
mod wake;
