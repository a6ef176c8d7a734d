//! The arithmetic of the shared quota buckets (`KmsStore::take_tokens`), one function
//! for the backends that compute in Rust (memory, SQLite); PostgreSQL does the same in
//! its statement, so that the read and the write are one atomic step there.

/// A bucket of `per_minute` tokens that held `tokens` `elapsed_s` seconds ago, refilled
/// at `per_minute` a minute and capped at `per_minute`: grants up to `want` whole tokens
/// and returns (granted, tokens left).
pub(super) fn take(tokens: f64, elapsed_s: f64, want: u32, per_minute: u32) -> (u32, f64) {
    let cap = f64::from(per_minute);
    // A clock that stepped back refills nothing; it never drains the bucket.
    let now = (tokens + elapsed_s.max(0.0) * cap / 60.0).min(cap);
    let granted = now.floor().min(f64::from(want)).max(0.0);
    // `granted` is a whole number in 0..=want, so the cast is exact.
    (granted as u32, now - granted)
}

/// Milliseconds since the Unix epoch (SQLite's and memory's bucket clock).
pub(super) fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::take;

    #[test]
    fn grants_whole_tokens_up_to_want_and_refills_at_the_rate() {
        assert_eq!(take(5.0, 0.0, 3, 5), (3, 2.0));
        assert_eq!(take(0.5, 0.0, 3, 5), (0, 0.5));
        // 60 a minute: one token a second.
        assert_eq!(take(0.0, 2.5, 10, 60), (2, 0.5));
        // Capped at the quota however long it sat.
        assert_eq!(take(0.0, 1e9, 100, 60), (60, 0.0));
        // A clock that stepped back.
        assert_eq!(take(1.0, -30.0, 5, 60), (1, 0.0));
    }
}
