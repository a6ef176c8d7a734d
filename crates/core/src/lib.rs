//! What every sealstore layer shares on purpose: the clock, the root key and sealing
//! under it, opening the SQLite database, the audit log, request ids, metrics, and the
//! leases that keep background work to one gateway at a time.
//! Nothing here knows HTTP, keys' semantics or objects.

pub mod audit;
pub mod blocking;
pub mod clock;
pub mod db;
pub mod files;
pub mod leases;
pub mod locations;
pub mod metrics;
pub mod pg;
pub mod request_id;
pub mod rootkey;
pub mod seal;
pub mod settings;
