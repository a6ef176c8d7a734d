//! The KMS core's own state changes (rotation, scheduled destruction) in the audit log.

/// Audits the KMS core's own state changes, attributed to the system.
pub struct KmsAudit {
    pub log: std::sync::Arc<crate::audit::AuditLog>,
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
}

impl crate::kms::EventSink for KmsAudit {
    fn event(&self, resource: &str, what: &str, outcome: &str) {
        self.log
            .record(self.clock.now(), "system:sealstore", what, resource, "", outcome);
    }
}
