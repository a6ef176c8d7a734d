//! Identity and access: IAM policies attached to resources, the role table, and the
//! permission check.

pub mod policy;
pub mod roles;
pub mod tokens;

pub use policy::{Binding, Condition, IamError, Policy, PolicyStore};

/// Whether `member` holds `permission` on the first resource of `chain` through any
/// policy along it (resource, then its ancestors: key → key ring → project).
/// Conditional bindings are not evaluated and grant nothing (fail closed).
pub fn has_permission(store: &PolicyStore, member: &str, chain: &[String], permission: &str) -> Result<bool, IamError> {
    for resource in chain {
        let policy = store.get(resource)?;
        let granted = policy.bindings.iter().any(|b| {
            b.condition.is_none()
                && roles::grants(&b.role, permission)
                && b.members
                    .iter()
                    .any(|m| m == member || m == "allUsers" || m == "allAuthenticatedUsers")
        });
        if granted {
            return Ok(true);
        }
    }
    Ok(false)
}
