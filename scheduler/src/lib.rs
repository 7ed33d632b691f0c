//! The scheduler role: a tick loop that fires due backup jobs exactly once
//! across replicas (Redis lock on the scheduled slot, with the database's
//! unique `(job_id, scheduled_for)` on `backup_runs` as the final fence).
//!
//! Not implemented yet. The crate exists so that the workspace has its final
//! shape; it exports nothing, and `cairn` offers no `scheduler` subcommand
//! until this crate does its job. Nothing in Cairn fires jobs on a schedule
//! today.
