//! Prometheus metrics (`GET /metrics`), through the `metrics` facade. Label values are
//! drawn from small fixed sets (API, method, status, operation, outcome): never a key,
//! bucket or object name, whose number is unbounded.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls return the same handle. `None`
/// if another recorder was installed first (then metrics are not exported).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &buckets,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full("sealstore_metadata_commit_batch_size".into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics disabled");
                    return None;
                }
            };
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .as_ref()
}

pub fn connection_opened() {
    metrics::gauge!("sealstore_connections_open").increment(1.0);
}

pub fn connection_closed() {
    metrics::gauge!("sealstore_connections_open").decrement(1.0);
}

/// A KMS crypto verb as `(operation, key purpose)` labels; `None` for other methods.
pub fn kms_operation(verb: &str) -> Option<(&'static str, &'static str)> {
    Some(match verb {
        "encrypt" => ("encrypt", "ENCRYPT_DECRYPT"),
        "decrypt" => ("decrypt", "ENCRYPT_DECRYPT"),
        "rawEncrypt" => ("rawEncrypt", "RAW_ENCRYPT_DECRYPT"),
        "rawDecrypt" => ("rawDecrypt", "RAW_ENCRYPT_DECRYPT"),
        "asymmetricSign" => ("asymmetricSign", "ASYMMETRIC_SIGN"),
        "asymmetricDecrypt" => ("asymmetricDecrypt", "ASYMMETRIC_DECRYPT"),
        "macSign" => ("macSign", "MAC"),
        "macVerify" => ("macVerify", "MAC"),
        _ => return None,
    })
}

/// One KMS key operation: `caller` is `api` (a client) or `storage` (data keys).
pub fn kms_op(caller: &'static str, operation: &'static str, purpose: &'static str, outcome: &'static str) {
    metrics::counter!(
        "sealstore_kms_operations_total",
        "caller" => caller,
        "operation" => operation,
        "purpose" => purpose,
        "outcome" => outcome
    )
    .increment(1);
}
