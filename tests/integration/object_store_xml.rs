//! object_store's `aws` (S3, SigV4 with an HMAC key) and `gcp` (GCS XML API, bearer
//! token) backends against the XML API: put, get, ranged get, head, list, multipart
//! put, copy, delete.

use crate::harness::Server;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig, StaticCredentialProvider};
use std::sync::Arc;

fn cli(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealstore"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("SEALSTORE_ROOT_KEY")
        .output()
        .expect("run sealstore");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..Default::default()
    }
}

async fn exercise(store: Arc<dyn ObjectStore>) {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let p = Path::from("dir/one.bin");
    store.put(&p, PutPayload::from(data.clone())).await.unwrap();
    let got = store.get(&p).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], &data[..]);
    let range = store.get_range(&p, 1000..2000).await.unwrap();
    assert_eq!(&range[..], &data[1000..2000]);
    let meta = store.head(&p).await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(meta.e_tag.is_some());
    // Multipart: two 5 MiB parts and a tail.
    let big: Vec<u8> = (0..(10 * 1024 * 1024 + 123)).map(|i: u32| (i % 253) as u8).collect();
    let q = Path::from("dir/big.bin");
    let mut up = store.put_multipart(&q).await.unwrap();
    for chunk in big.chunks(5 * 1024 * 1024) {
        up.put_part(PutPayload::from(chunk.to_vec())).await.unwrap();
    }
    up.complete().await.unwrap();
    assert_eq!(&store.get(&q).await.unwrap().bytes().await.unwrap()[..], &big[..]);
    store.copy(&p, &Path::from("copy.bin")).await.unwrap();
    assert_eq!(
        &store.get(&Path::from("copy.bin")).await.unwrap().bytes().await.unwrap()[..],
        &data[..]
    );
    let mut names: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    names.sort();
    assert_eq!(names, ["copy.bin", "dir/big.bin", "dir/one.bin"]);
    let top = store.list_with_delimiter(None).await.unwrap();
    assert_eq!(top.common_prefixes, [Path::from("dir")]);
    assert_eq!(top.objects.len(), 1);
    store.delete(&p).await.unwrap();
    assert!(matches!(
        store.head(&p).await,
        Err(object_store::Error::NotFound { .. })
    ));
}

#[test]
fn object_store_s3_and_gcs_backends() {
    let mut s = Server::start(&["--auth", "token"]);
    let project = "os-project";
    let key = cli(
        &s.dir,
        &[
            "iam",
            "hmac-keys",
            "create",
            "--service-account",
            "os@os-project.iam.gserviceaccount.com",
            "--project",
            project,
            "--role",
            "roles/storage.admin",
        ],
    );
    let (access_id, secret) = key.trim().split_once('\t').unwrap();
    let token = cli(
        &s.dir,
        &[
            "iam",
            "tokens",
            "create",
            "--principal",
            "user:os@example.com",
            "--project",
            project,
            "--role",
            "roles/storage.admin",
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    for bucket in ["os-s3-bucket", "os-gcs-bucket"] {
        let r = crate::harness::raw(
            &s.url,
            "PUT",
            &format!("/{bucket}"),
            &[
                ("authorization", &format!("Bearer {}", token.trim())),
                ("x-goog-project-id", project),
            ],
            b"",
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let s3 = AmazonS3Builder::new()
        .with_endpoint(&s.url)
        .with_bucket_name("os-s3-bucket")
        .with_region("us-east-1")
        .with_access_key_id(access_id)
        .with_secret_access_key(secret)
        .with_virtual_hosted_style_request(false)
        .with_allow_http(true)
        .with_retry(no_retries())
        .build()
        .unwrap();
    rt.block_on(exercise(Arc::new(s3)));
    // The GCS backend takes its base URL from a service-account document; the bearer
    // is a sealstore token.
    let sa = serde_json::json!({
        "private_key": "unused",
        "private_key_id": "unused",
        "client_email": "os@os-project.iam.gserviceaccount.com",
        "gcs_base_url": s.url,
        "disable_oauth": true,
    });
    let gcs = GoogleCloudStorageBuilder::new()
        .with_bucket_name("os-gcs-bucket")
        .with_service_account_key(sa.to_string())
        .with_credentials(Arc::new(StaticCredentialProvider::new(
            object_store::gcp::GcpCredential {
                bearer: token.trim().to_owned(),
            },
        )))
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .with_retry(no_retries())
        .build()
        .unwrap();
    rt.block_on(exercise(Arc::new(gcs)));
    s.stop();
}
