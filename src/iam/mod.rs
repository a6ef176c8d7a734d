//! Identity and access: IAM policies attached to resources. Enforcement arrives with
//! the IAM issue; for now policies are validated, stored and returned.

pub mod policy;

pub use policy::{Binding, Condition, IamError, Policy, PolicyStore};
