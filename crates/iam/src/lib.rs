//! Identity and access: IAM policies attached to resources, the role table, and the
//! permission check.

mod error;
pub mod hmac_keys;
pub mod policy;
pub mod roles;
pub mod tokens;

pub use error::IamError;
pub use policy::{Binding, Condition, Policy, PolicyStore};

/// Whether `member` holds `permission` on the first resource of `chain` through any
/// policy along it (resource, then its ancestors: key → key ring → project).
/// Conditional bindings are not evaluated and grant nothing (fail closed).
pub async fn has_permission(
    store: &PolicyStore,
    member: &str,
    chain: &[String],
    permission: &str,
) -> Result<bool, IamError> {
    has_permission_where(store, member, chain, permission, true).await
}

/// `allUsers` and `allAuthenticatedUsers`: the members that make a resource public.
pub fn is_public_member(m: &str) -> bool {
    m == "allUsers" || m == "allAuthenticatedUsers"
}

/// As `has_permission`; with `public_ok = false` (a bucket with public access
/// prevention enforced) grants to the public members count for nothing.
pub async fn has_permission_where(
    store: &PolicyStore,
    member: &str,
    chain: &[String],
    permission: &str,
    public_ok: bool,
) -> Result<bool, IamError> {
    let grants = |policies: &[std::sync::Arc<Policy>]| {
        policies.iter().any(|policy| {
            policy.bindings.iter().any(|b| {
                b.condition.is_none()
                    && roles::grants(&b.role, permission)
                    && b.members
                        .iter()
                        .any(|m| m == member || (public_ok && is_public_member(m)))
            })
        })
    };
    let (policies, read_now) = store.chain(chain, false).await?;
    if grants(&policies) {
        return Ok(true);
    }
    // A denial is never judged on a cached version: a grant just made by another
    // process (the CLI, another gateway) counts at once.
    if read_now {
        return Ok(false);
    }
    Ok(grants(&store.chain(chain, true).await?.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inheritance_runs_down_the_chain_and_not_sideways() {
        let store = PolicyStore::memory();
        let grant = async |res: &str, role: &str, member: &str| store.add_binding(res, role, member).await.unwrap();
        let key = |k: &str| {
            vec![
                format!("projects/p/locations/l/keyRings/r/cryptoKeys/{k}"),
                "projects/p/locations/l/keyRings/r".to_owned(),
                "projects/p".to_owned(),
            ]
        };
        let enc = "cloudkms.cryptoKeyVersions.useToEncrypt";
        grant(&key("a")[0], "roles/cloudkms.cryptoKeyEncrypter", "user:key@x").await;
        grant(
            &key("a")[1],
            "roles/cloudkms.cryptoKeyEncrypterDecrypter",
            "user:ring@x",
        )
        .await;
        grant("projects/p", "roles/viewer", "user:viewer@x").await;
        assert!(has_permission(&store, "user:key@x", &key("a"), enc).await.unwrap());
        assert!(
            !has_permission(&store, "user:key@x", &key("b"), enc).await.unwrap(),
            "a key grant is not a sibling grant"
        );
        assert!(
            has_permission(&store, "user:ring@x", &key("b"), enc).await.unwrap(),
            "a ring grant covers its keys"
        );
        assert!(
            has_permission(&store, "user:viewer@x", &key("b"), "cloudkms.cryptoKeys.get")
                .await
                .unwrap()
        );
        assert!(!has_permission(&store, "user:viewer@x", &key("b"), enc).await.unwrap());
        assert!(
            !has_permission(&store, "user:nobody@x", &key("a"), "cloudkms.cryptoKeys.get")
                .await
                .unwrap()
        );
        // Conditional bindings are not evaluated and grant nothing.
        let mut p = store.get(&key("c")[0]).await.unwrap();
        p.version = 3;
        p.bindings.push(Binding {
            role: "roles/owner".into(),
            members: vec!["user:cond@x".into()],
            condition: Some(Condition {
                expression: "true".into(),
                title: "t".into(),
                description: String::new(),
                location: String::new(),
            }),
        });
        store.set(&key("c")[0], p).await.unwrap();
        assert!(!has_permission(&store, "user:cond@x", &key("c"), enc).await.unwrap());
    }
}
