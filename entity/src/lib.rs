//! sea-orm entities, one module per table, in the plain generated style.
//!
//! Entities are data only: no behaviour, no validation, no queries. The code
//! that reads and writes them lives in `cairn-core`, next to its rules. Ids
//! are UUID v7 (time-ordered) and every timestamp is UTC. Columns that hold
//! one of a fixed set of words are typed by the enums of [`enums`].

pub mod api_token;
pub mod app;
pub mod backup;
pub mod backup_copy;
pub mod backup_job;
pub mod backup_job_app;
pub mod backup_job_copy_target;
pub mod backup_run;
pub mod backup_target;
pub mod console_session;
pub mod deployment;
pub mod enums;
pub mod notification_channel;
pub mod notification_delivery;
pub mod organization;
pub mod orphan;
pub mod orphan_sweep;
pub mod restore;
pub mod retired_slug;
pub mod system_backup;
pub mod system_key;
pub mod verification;
pub mod volume;
pub mod volume_directory;
