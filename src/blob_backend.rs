//! Opens the blob store `--blob-store` names: a local directory, memory, or a bucket of
//! S3, GCS or Azure Blob through object_store. Cloud stores are configured the standard
//! object_store way, from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), so whatever
//! credentials chain a deployment already uses works unchanged.

use crate::storage::blobs::BlobStore;
use anyhow::Context;
use object_store::ObjectStore;
use object_store::prefix::PrefixStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A parsed `--blob-store` value.
#[derive(Debug, PartialEq, Eq)]
pub enum BlobSpec {
    File(PathBuf),
    Memory,
    /// `scheme` is `s3`, `gs` or `az`; `container` the bucket (or Azure container).
    Cloud {
        scheme: &'static str,
        container: String,
        prefix: Option<String>,
    },
}

impl BlobSpec {
    pub fn parse(spec: Option<&str>, data_dir: &Path) -> anyhow::Result<Self> {
        let Some(spec) = spec else {
            return Ok(Self::File(data_dir.join("blobs")));
        };
        if spec == "memory://" {
            return Ok(Self::Memory);
        }
        if let Some(path) = spec.strip_prefix("file://") {
            anyhow::ensure!(
                !path.is_empty(),
                "--blob-store file:// needs a path (file:///var/lib/…)"
            );
            return Ok(Self::File(PathBuf::from(path)));
        }
        for scheme in ["s3", "gs", "az"] {
            if let Some(rest) = spec.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) {
                let (container, prefix) = match rest.split_once('/') {
                    Some((c, p)) => (c, Some(p.trim_matches('/')).filter(|p| !p.is_empty())),
                    None => (rest, None),
                };
                anyhow::ensure!(
                    !container.is_empty(),
                    "--blob-store {scheme}:// needs a bucket: {scheme}://BUCKET[/PREFIX]"
                );
                return Ok(Self::Cloud {
                    scheme,
                    container: container.to_owned(),
                    prefix: prefix.map(str::to_owned),
                });
            }
        }
        anyhow::bail!(
            "unsupported --blob-store {spec:?}: use file://PATH, memory://, s3://BUCKET[/PREFIX], \
             gs://BUCKET[/PREFIX] or az://CONTAINER[/PREFIX]"
        )
    }

    /// The local directory behind the store, if any (its permissions are checked).
    pub fn local_dir(&self) -> Option<&Path> {
        match self {
            Self::File(p) => Some(p),
            _ => None,
        }
    }
}

/// How long a cloud request is retried before the client gets a 503: the object_store
/// default (10 retries over up to 3 minutes) would hold a client's request far past its
/// own timeout while the backend is down.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(15),
    }
}

/// `shared`: other gateways may be writing into the same store (a shared database).
pub fn open(spec: &BlobSpec, shared: bool) -> anyhow::Result<BlobStore> {
    match spec {
        BlobSpec::Memory => Ok(BlobStore::new(Arc::new(object_store::memory::InMemory::new()))),
        BlobSpec::File(path) => local_store(path.clone(), shared),
        BlobSpec::Cloud {
            scheme,
            container,
            prefix,
        } => {
            let store: Arc<dyn ObjectStore> = match *scheme {
                "s3" => Arc::new(
                    object_store::aws::AmazonS3Builder::from_env()
                        .with_bucket_name(container)
                        .with_retry(retry())
                        .build()
                        .context("configuring the S3 blob store (AWS_* variables)")?,
                ),
                "gs" => Arc::new(
                    object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(container)
                        .with_retry(retry())
                        .build()
                        .context("configuring the GCS blob store (GOOGLE_* variables)")?,
                ),
                _ => Arc::new(
                    object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_container_name(container)
                        .with_retry(retry())
                        .build()
                        .context("configuring the Azure blob store (AZURE_* variables)")?,
                ),
            };
            let store: Arc<dyn ObjectStore> = match prefix {
                Some(p) => Arc::new(PrefixStore::new(store, p.as_str())),
                None => store,
            };
            Ok(BlobStore::new(store))
        }
    }
}

/// A local blob directory. Staging files of writes (`name#id`) that a crash left behind
/// are removed first: alone, nothing is writing at start-up; on a shared file system
/// other gateways may be, so only staging files untouched for an hour go.
fn local_store(path: PathBuf, shared: bool) -> anyhow::Result<BlobStore> {
    crate::files::private_dir(&path).with_context(|| format!("creating {}", path.display()))?;
    // The blob directory's own entry must be durable before any blob in it is.
    for dir in [
        Some(path.as_path()),
        path.parent().filter(|p| !p.as_os_str().is_empty()),
    ]
    .into_iter()
    .flatten()
    {
        std::fs::File::open(dir)?.sync_all()?;
    }
    let mut removed = 0;
    let mut dirs = vec![path.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else if entry.file_name().to_string_lossy().contains('#')
                && (!shared || older_than(&entry, STAGING_GRACE))
                && std::fs::remove_file(&p).is_ok()
            {
                removed += 1;
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed partial blob writes left by an earlier crash");
    }
    let store = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&path)?);
    Ok(BlobStore::local(store, path))
}

/// How long another gateway's staging file may sit untouched before start-up removes it.
const STAGING_GRACE: Duration = Duration::from_secs(3600);

fn older_than(entry: &std::fs::DirEntry, age: Duration) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|e| e > age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let d = Path::new("/data");
        assert_eq!(BlobSpec::parse(None, d).unwrap(), BlobSpec::File("/data/blobs".into()));
        assert_eq!(BlobSpec::parse(Some("memory://"), d).unwrap(), BlobSpec::Memory);
        assert_eq!(
            BlobSpec::parse(Some("file:///x/y"), d).unwrap(),
            BlobSpec::File("/x/y".into())
        );
        assert_eq!(
            BlobSpec::parse(Some("s3://bkt/a/b/"), d).unwrap(),
            BlobSpec::Cloud {
                scheme: "s3",
                container: "bkt".into(),
                prefix: Some("a/b".into())
            }
        );
        assert_eq!(
            BlobSpec::parse(Some("az://c"), d).unwrap(),
            BlobSpec::Cloud {
                scheme: "az",
                container: "c".into(),
                prefix: None
            }
        );
        for bad in ["gs://", "s3:///p", "file://", "ftp://x", "s3:/b"] {
            assert!(BlobSpec::parse(Some(bad), d).is_err(), "{bad} was accepted");
        }
    }

    /// Start-up removes crash leftovers (staging files) when alone; on a shared store it
    /// leaves young ones, which may be other gateways' writes in flight.
    #[test]
    fn start_up_leaves_young_staging_files_on_a_shared_store() {
        let dir = std::env::temp_dir().join(format!("sealstore-staging-{}", std::process::id()));
        let staging = dir.join("ab").join("cd");
        std::fs::create_dir_all(&staging).unwrap();
        let file = staging.join("abcd.0#7");
        std::fs::write(&file, b"in flight").unwrap();
        local_store(dir.clone(), true).unwrap();
        assert!(file.exists(), "a shared store lost another gateway's write in flight");
        local_store(dir.clone(), false).unwrap();
        assert!(!file.exists(), "a crash leftover survived start-up");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
