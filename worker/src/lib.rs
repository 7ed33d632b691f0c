//! The worker role: claims pending backups and restores with a lease, runs
//! them (`tar` or `pg_dump`, streamed to the storage target), prunes by
//! retention and dispatches notifications.
//!
//! Not implemented yet. The crate exists so that the workspace has its final
//! shape; it exports nothing, and `cairn` offers no `worker` subcommand until
//! this crate does its job. Backups recorded through the API stay `pending`
//! until a worker exists.
