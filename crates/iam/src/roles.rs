//! Predefined roles and the permissions they grant, with GCP's names.

/// Every Cloud KMS permission sealstore checks.
pub const KMS_PERMISSIONS: &[&str] = &[
    "cloudkms.locations.get",
    "cloudkms.locations.list",
    "cloudkms.locations.generateRandomBytes",
    "cloudkms.keyRings.create",
    "cloudkms.keyRings.get",
    "cloudkms.keyRings.list",
    "cloudkms.keyRings.getIamPolicy",
    "cloudkms.keyRings.setIamPolicy",
    "cloudkms.cryptoKeys.create",
    "cloudkms.cryptoKeys.get",
    "cloudkms.cryptoKeys.list",
    "cloudkms.cryptoKeys.update",
    "cloudkms.cryptoKeys.getIamPolicy",
    "cloudkms.cryptoKeys.setIamPolicy",
    "cloudkms.cryptoKeyVersions.create",
    "cloudkms.cryptoKeyVersions.get",
    "cloudkms.cryptoKeyVersions.list",
    "cloudkms.cryptoKeyVersions.update",
    "cloudkms.cryptoKeyVersions.destroy",
    "cloudkms.cryptoKeyVersions.restore",
    "cloudkms.cryptoKeyVersions.useToEncrypt",
    "cloudkms.cryptoKeyVersions.useToDecrypt",
    "cloudkms.cryptoKeyVersions.useToSign",
    "cloudkms.cryptoKeyVersions.useToVerify",
    "cloudkms.cryptoKeyVersions.viewPublicKey",
    "cloudkms.importJobs.create",
    "cloudkms.importJobs.get",
    "cloudkms.importJobs.list",
    "cloudkms.importJobs.useToImport",
    "cloudkms.importJobs.getIamPolicy",
    "cloudkms.importJobs.setIamPolicy",
];

const KEY_USE: &[&str] = &[
    "cloudkms.cryptoKeyVersions.useToEncrypt",
    "cloudkms.cryptoKeyVersions.useToDecrypt",
    "cloudkms.cryptoKeyVersions.useToSign",
    "cloudkms.cryptoKeyVersions.useToVerify",
];

/// Drawing from the KMS randomness source: an operation, like key use, not administration.
const RANDOM_BYTES: &str = "cloudkms.locations.generateRandomBytes";

fn is_read(p: &str) -> bool {
    p.ends_with(".get") || p.ends_with(".list") || p.ends_with(".getIamPolicy")
}

pub const STORAGE_PERMISSIONS: &[&str] = &[
    "storage.buckets.create",
    "storage.buckets.get",
    "storage.buckets.list",
    "storage.buckets.update",
    "storage.buckets.delete",
    "storage.buckets.getIamPolicy",
    "storage.buckets.setIamPolicy",
    "storage.objects.create",
    "storage.objects.get",
    "storage.objects.list",
    "storage.objects.update",
    "storage.objects.delete",
];

/// Whether `role` grants `permission`. Unknown roles grant nothing.
pub fn grants(role: &str, permission: &str) -> bool {
    let kms = permission.starts_with("cloudkms.");
    match role {
        // As on GCS, storage admins do not manage HMAC keys: that is its own role.
        "roles/storage.admin" => permission.starts_with("storage.") && !permission.starts_with("storage.hmacKeys."),
        "roles/storage.hmacKeyAdmin" => permission.starts_with("storage.hmacKeys."),
        "roles/storage.objectAdmin" => permission.starts_with("storage.objects."),
        "roles/storage.objectCreator" => permission == "storage.objects.create",
        "roles/storage.objectViewer" => matches!(permission, "storage.objects.get" | "storage.objects.list"),
        "roles/owner" => true,
        "roles/editor" => !permission.ends_with(".setIamPolicy"),
        "roles/viewer" => is_read(permission),
        "roles/cloudkms.admin" => kms && !KEY_USE.contains(&permission) && permission != RANDOM_BYTES,
        "roles/cloudkms.importer" => matches!(
            permission,
            "cloudkms.importJobs.create"
                | "cloudkms.importJobs.get"
                | "cloudkms.importJobs.list"
                | "cloudkms.importJobs.useToImport"
        ),
        "roles/cloudkms.cryptoKeyEncrypterDecrypter" => {
            matches!(
                permission,
                "cloudkms.cryptoKeyVersions.useToEncrypt" | "cloudkms.cryptoKeyVersions.useToDecrypt"
            )
        }
        "roles/cloudkms.cryptoKeyEncrypter" => permission == "cloudkms.cryptoKeyVersions.useToEncrypt",
        "roles/cloudkms.cryptoKeyDecrypter" => permission == "cloudkms.cryptoKeyVersions.useToDecrypt",
        "roles/cloudkms.signerVerifier" => matches!(
            permission,
            "cloudkms.cryptoKeyVersions.useToSign"
                | "cloudkms.cryptoKeyVersions.useToVerify"
                | "cloudkms.cryptoKeyVersions.viewPublicKey"
        ),
        "roles/cloudkms.signer" => permission == "cloudkms.cryptoKeyVersions.useToSign",
        "roles/cloudkms.publicKeyViewer" => permission == "cloudkms.cryptoKeyVersions.viewPublicKey",
        "roles/cloudkms.cryptoOperator" => {
            KEY_USE.contains(&permission)
                || permission == "cloudkms.cryptoKeyVersions.viewPublicKey"
                || permission == RANDOM_BYTES
        }
        "roles/cloudkms.viewer" => kms && (permission.ends_with(".get") || permission.ends_with(".list")),
        _ => false,
    }
}

pub const KNOWN_ROLES: &[&str] = &[
    "roles/owner",
    "roles/editor",
    "roles/viewer",
    "roles/cloudkms.admin",
    "roles/cloudkms.importer",
    "roles/cloudkms.cryptoKeyEncrypterDecrypter",
    "roles/cloudkms.cryptoKeyEncrypter",
    "roles/cloudkms.cryptoKeyDecrypter",
    "roles/cloudkms.signerVerifier",
    "roles/cloudkms.signer",
    "roles/cloudkms.publicKeyViewer",
    "roles/cloudkms.cryptoOperator",
    "roles/cloudkms.viewer",
    "roles/storage.admin",
    "roles/storage.hmacKeyAdmin",
    "roles/storage.objectAdmin",
    "roles/storage.objectCreator",
    "roles/storage.objectViewer",
];

/// A project's number: 12 digits derived from its id, so every process (and every
/// restart) gives the same project the same number without storing it. Project ids
/// start with a letter, so a string of digits is always a number.
pub fn project_number(project: &str) -> u64 {
    if let Ok(n) = project.parse::<u64>() {
        return n;
    }
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("sealstore-project-number\0{project}").as_bytes(),
    );
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    100_000_000_000 + u64::from_be_bytes(first) % 900_000_000_000
}

/// The email of a project's storage service agent, formed from the project number as
/// GCS forms it (`service-<number>@gs-project-accounts…`), so `gsutil kms encryption`
/// grants exactly the identity storage uses.
pub fn storage_service_agent_email(project: &str) -> String {
    format!(
        "service-{}@gs-project-accounts.iam.gserviceaccount.com",
        project_number(project)
    )
}

/// The storage service agent of a project as an IAM member: storage wraps and unwraps
/// CMEK data keys as this identity.
pub fn storage_service_agent(project: &str) -> String {
    format!("serviceAccount:{}", storage_service_agent_email(project))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_numbers_are_stable_and_twelve_digits() {
        let n = project_number("test-project");
        assert_eq!(n, project_number("test-project"));
        assert_ne!(n, project_number("other-project"));
        assert_eq!(n.to_string().len(), 12);
        assert_eq!(project_number(&n.to_string()), n);
        assert_eq!(
            storage_service_agent(&n.to_string()),
            storage_service_agent("test-project")
        );
    }

    #[test]
    fn role_table() {
        let enc = "cloudkms.cryptoKeyVersions.useToEncrypt";
        assert!(grants("roles/cloudkms.cryptoKeyEncrypterDecrypter", enc));
        assert!(!grants("roles/cloudkms.admin", enc), "admins cannot use keys");
        assert!(grants("roles/cloudkms.admin", "cloudkms.importJobs.create"));
        assert!(grants("roles/cloudkms.importer", "cloudkms.importJobs.useToImport"));
        assert!(!grants("roles/cloudkms.importer", "cloudkms.cryptoKeys.create"));
        assert!(grants("roles/viewer", "cloudkms.cryptoKeys.get"));
        assert!(!grants("roles/viewer", enc));
        assert!(!grants("roles/nonsense", "cloudkms.cryptoKeys.get"));
    }
}
