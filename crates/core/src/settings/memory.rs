//! Settings in process memory: for tests, and for runs that keep nothing.

use super::{SettingsBackend, SettingsError};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemorySettings {
    values: Mutex<HashMap<String, i64>>,
}

impl MemorySettings {
    fn values(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl SettingsBackend for MemorySettings {
    async fn get_i64(&self, key: &str) -> Result<Option<i64>, SettingsError> {
        Ok(self.values().get(key).copied())
    }

    async fn set_i64(&self, key: &str, value: i64) -> Result<(), SettingsError> {
        self.values().insert(key.to_owned(), value);
        Ok(())
    }
}
