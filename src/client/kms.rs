//! `sealstore kms ...`: gcloud-style commands against the Cloud KMS REST API,
//! including automatic (local) wrapping of key material for import.

use super::http::Client;
use crate::kms::types::{Algorithm, ImportMethod, ProtectionLevel, Purpose};
use crate::kms::wrapping;
use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use zeroize::Zeroizing;

/// No `Debug`: it holds the bearer token.
#[derive(Args)]
pub struct KmsArgs {
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "SEALSTORE_ENDPOINT",
        default_value = "http://127.0.0.1:8080"
    )]
    pub endpoint: String,
    /// Project id.
    #[arg(long, global = true, env = "SEALSTORE_PROJECT", default_value = "default")]
    pub project: String,
    /// Bearer token (for `--auth token` servers).
    #[arg(long, global = true, env = "SEALSTORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: KmsCommand,
}

#[derive(Subcommand, Debug)]
pub enum KmsCommand {
    /// Key rings.
    Keyrings {
        #[command(subcommand)]
        command: KeyringCommand,
    },
    /// Crypto keys and their versions.
    Keys {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Import jobs.
    ImportJobs {
        #[command(subcommand)]
        command: ImportJobCommand,
    },
}

#[derive(Args, Debug, Clone)]
pub struct RingRef {
    #[arg(long)]
    pub location: String,
    #[arg(long)]
    pub keyring: String,
}

#[derive(Args, Debug, Clone)]
pub struct KeyRef {
    #[command(flatten)]
    pub ring: RingRef,
    #[arg(long)]
    pub key: String,
}

#[derive(Subcommand, Debug)]
pub enum KeyringCommand {
    Create(RingRef),
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    Create {
        #[command(flatten)]
        key: KeyRef,
        /// encryption | asymmetric-signing | asymmetric-encryption | mac (or the API names).
        #[arg(long)]
        purpose: String,
        /// e.g. google-symmetric-encryption, ec-sign-p256-sha256.
        #[arg(long)]
        default_algorithm: Option<String>,
        /// software | hsm.
        #[arg(long, default_value = "software")]
        protection_level: String,
        #[arg(long)]
        skip_initial_version_creation: bool,
        #[arg(long)]
        import_only: bool,
    },
    SetPrimaryVersion {
        #[command(flatten)]
        key: KeyRef,
        #[arg(long)]
        version: u32,
    },
    /// Key versions.
    Versions {
        #[command(subcommand)]
        command: VersionCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum VersionCommand {
    List(KeyRef),
    Describe(VersionRef),
    Enable(VersionRef),
    Disable(VersionRef),
    Destroy(VersionRef),
    Restore(VersionRef),
    /// Imports key material. `--target-key-file` wraps the plain key locally with the
    /// job's public key; `--wrapped-key-file` sends an already wrapped key.
    Import {
        #[command(flatten)]
        key: KeyRef,
        #[arg(long)]
        import_job: String,
        #[arg(long)]
        algorithm: String,
        #[arg(
            long,
            conflicts_with = "wrapped_key_file",
            required_unless_present = "wrapped_key_file"
        )]
        target_key_file: Option<PathBuf>,
        #[arg(long)]
        wrapped_key_file: Option<PathBuf>,
        /// The job's public key (PEM), already downloaded, so the key is not fetched
        /// again. With `--import-method` too, the job is not contacted at all.
        #[arg(long)]
        public_key_file: Option<PathBuf>,
        /// The job's import method; saves the job lookup when `--public-key-file` is given.
        #[arg(long, requires = "public_key_file")]
        import_method: Option<String>,
        /// Re-import into this existing version.
        #[arg(long)]
        version: Option<u32>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct VersionRef {
    #[command(flatten)]
    pub key: KeyRef,
    #[arg(long)]
    pub version: u32,
}

#[derive(Subcommand, Debug)]
pub enum ImportJobCommand {
    Create {
        #[command(flatten)]
        ring: RingRef,
        #[arg(long = "import-job")]
        id: String,
        /// e.g. rsa-oaep-3072-sha1-aes-256.
        #[arg(long)]
        import_method: String,
        #[arg(long, default_value = "software")]
        protection_level: String,
    },
    Describe {
        #[command(flatten)]
        ring: RingRef,
        #[arg(long = "import-job")]
        id: String,
        /// Also write the job's public key (PEM) to this file.
        #[arg(long)]
        public_key_out: Option<PathBuf>,
    },
    List(RingRef),
}

/// Accepts gcloud spellings (`ec-sign-p256-sha256`) and API names (`EC_SIGN_P256_SHA256`).
fn api_name(s: &str) -> String {
    s.trim().replace('-', "_").to_ascii_uppercase()
}

fn parse_purpose(s: &str) -> anyhow::Result<Purpose> {
    let p = match api_name(s).as_str() {
        "ENCRYPTION" => Purpose::ENCRYPT_DECRYPT,
        "ASYMMETRIC_SIGNING" => Purpose::ASYMMETRIC_SIGN,
        "ASYMMETRIC_ENCRYPTION" => Purpose::ASYMMETRIC_DECRYPT,
        other => Purpose::from_name(other).ok_or_else(|| anyhow!("unknown purpose {s}"))?,
    };
    Ok(p)
}

fn parse<T>(what: &str, s: &str, f: fn(&str) -> Option<T>) -> anyhow::Result<T> {
    f(&api_name(s)).ok_or_else(|| anyhow!("unknown {what} {s}"))
}

impl RingRef {
    fn path(&self, project: &str) -> String {
        format!(
            "/v1/projects/{project}/locations/{}/keyRings/{}",
            self.location, self.keyring
        )
    }
    fn name(&self, project: &str) -> String {
        self.path(project).trim_start_matches("/v1/").to_owned()
    }
}

impl KeyRef {
    fn path(&self, project: &str) -> String {
        format!("{}/cryptoKeys/{}", self.ring.path(project), self.key)
    }
}

impl VersionRef {
    fn path(&self, project: &str) -> String {
        format!("{}/cryptoKeyVersions/{}", self.key.path(project), self.version)
    }
}

/// Extracts the DER from a `-----BEGIN PUBLIC KEY-----` PEM.
pub fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN PUBLIC KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        bail!("no -----BEGIN PUBLIC KEY----- block found");
    }
    STANDARD.decode(body).context("the PEM body is not valid base64")
}

pub fn run(args: KmsArgs) -> anyhow::Result<Value> {
    let c = Client::new(&args.endpoint, args.token.clone());
    let p = args.project.as_str();
    match args.command {
        KmsCommand::Keyrings {
            command: KeyringCommand::Create(r),
        } => {
            let parent = format!(
                "/v1/projects/{p}/locations/{}/keyRings?keyRingId={}",
                r.location, r.keyring
            );
            c.send("POST", &parent, &json!({}))
        }
        KmsCommand::Keys { command } => run_key(&c, p, command),
        KmsCommand::ImportJobs { command } => match command {
            ImportJobCommand::Create {
                ring,
                id,
                import_method,
                protection_level,
            } => {
                let body = json!({
                    "importMethod": parse("import method", &import_method, ImportMethod::from_name)?.name(),
                    "protectionLevel": parse("protection level", &protection_level, ProtectionLevel::from_name)?.name(),
                });
                c.send("POST", &format!("{}/importJobs?importJobId={id}", ring.path(p)), &body)
            }
            ImportJobCommand::Describe {
                ring,
                id,
                public_key_out,
            } => {
                let job = c.get(&format!("{}/importJobs/{id}", ring.path(p)))?;
                if let Some(out) = public_key_out {
                    let pem = job["publicKey"]["pem"]
                        .as_str()
                        .ok_or_else(|| anyhow!("the import job is not ACTIVE: no public key"))?;
                    std::fs::write(&out, pem).with_context(|| format!("writing {}", out.display()))?;
                }
                Ok(job)
            }
            ImportJobCommand::List(ring) => c.get(&format!("{}/importJobs", ring.path(p))),
        },
    }
}

fn run_key(c: &Client, p: &str, command: KeyCommand) -> anyhow::Result<Value> {
    match command {
        KeyCommand::Create {
            key,
            purpose,
            default_algorithm,
            protection_level,
            skip_initial_version_creation,
            import_only,
        } => {
            let mut template = json!({
                "protectionLevel": parse("protection level", &protection_level, ProtectionLevel::from_name)?.name(),
            });
            if let Some(a) = default_algorithm {
                template["algorithm"] = json!(parse("algorithm", &a, Algorithm::from_name)?.name());
            }
            let body = json!({"purpose": parse_purpose(&purpose)?.name(), "versionTemplate": template, "importOnly": import_only});
            let path = format!(
                "{}/cryptoKeys?cryptoKeyId={}&skipInitialVersionCreation={skip_initial_version_creation}",
                key.ring.path(p),
                key.key
            );
            c.send("POST", &path, &body)
        }
        KeyCommand::SetPrimaryVersion { key, version } => c.send(
            "POST",
            &format!("{}:updatePrimaryVersion", key.path(p)),
            &json!({"cryptoKeyVersionId": version.to_string()}),
        ),
        KeyCommand::Versions { command } => match command {
            VersionCommand::List(key) => c.get(&format!("{}/cryptoKeyVersions", key.path(p))),
            VersionCommand::Describe(v) => c.get(&v.path(p)),
            VersionCommand::Enable(v) => c.send(
                "PATCH",
                &format!("{}?updateMask=state", v.path(p)),
                &json!({"state": "ENABLED"}),
            ),
            VersionCommand::Disable(v) => c.send(
                "PATCH",
                &format!("{}?updateMask=state", v.path(p)),
                &json!({"state": "DISABLED"}),
            ),
            VersionCommand::Destroy(v) => c.send("POST", &format!("{}:destroy", v.path(p)), &json!({})),
            VersionCommand::Restore(v) => c.send("POST", &format!("{}:restore", v.path(p)), &json!({})),
            VersionCommand::Import {
                key,
                import_job,
                algorithm,
                target_key_file,
                wrapped_key_file,
                public_key_file,
                import_method,
                version,
            } => {
                let algorithm = parse("algorithm", &algorithm, Algorithm::from_name)?;
                let job_name = if import_job.contains('/') {
                    import_job
                } else {
                    format!("{}/importJobs/{import_job}", key.ring.name(p))
                };
                let wrapped = match (target_key_file, wrapped_key_file) {
                    (_, Some(f)) => std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?,
                    (Some(f), None) => {
                        let target =
                            Zeroizing::new(std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?);
                        let read_pem = |pk: &PathBuf| {
                            std::fs::read_to_string(pk).with_context(|| format!("reading {}", pk.display()))
                        };
                        let (method, pem) = match (public_key_file, import_method) {
                            (Some(pk), Some(m)) => {
                                (parse("import method", &m, ImportMethod::from_name)?, read_pem(&pk)?)
                            }
                            (pk, None) => {
                                let job = c.get(&format!("/v1/{job_name}"))?;
                                let method = job["importMethod"]
                                    .as_str()
                                    .and_then(ImportMethod::from_name)
                                    .ok_or_else(|| anyhow!("import job {job_name} has no usable importMethod"))?;
                                let pem = match pk {
                                    Some(pk) => read_pem(&pk)?,
                                    None => job["publicKey"]["pem"]
                                        .as_str()
                                        .ok_or_else(|| {
                                            anyhow!("import job {job_name} is not ACTIVE: it has no public key yet")
                                        })?
                                        .to_owned(),
                                };
                                (method, pem)
                            }
                            (None, Some(_)) => bail!("--import-method is only used with --public-key-file"),
                        };
                        wrapping::wrap(method, &pem_to_der(&pem)?, &target)?
                    }
                    (None, None) => bail!("give --target-key-file or --wrapped-key-file"),
                };
                let mut body = json!({"algorithm": algorithm.name(), "importJob": job_name, "wrappedKey": STANDARD.encode(&wrapped)});
                if let Some(v) = version {
                    body["cryptoKeyVersion"] = json!(format!(
                        "{}/cryptoKeyVersions/{v}",
                        key.path(p).trim_start_matches("/v1/")
                    ));
                }
                c.send("POST", &format!("{}/cryptoKeyVersions:import", key.path(p)), &body)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_gcloud_and_api_spellings() {
        assert_eq!(parse_purpose("asymmetric-signing").unwrap(), Purpose::ASYMMETRIC_SIGN);
        assert_eq!(parse_purpose("ENCRYPT_DECRYPT").unwrap(), Purpose::ENCRYPT_DECRYPT);
        assert_eq!(
            parse("m", "rsa-oaep-3072-sha1-aes-256", ImportMethod::from_name).unwrap(),
            ImportMethod::RSA_OAEP_3072_SHA1_AES_256
        );
        assert!(parse("m", "rsa-oaep-1024", ImportMethod::from_name).is_err());
    }

    #[test]
    fn pem_round_trip() {
        let der = vec![1u8, 2, 3, 250];
        assert_eq!(pem_to_der(&crate::kms::material::spki_pem(&der)).unwrap(), der);
        assert!(pem_to_der("garbage").is_err());
    }
}
