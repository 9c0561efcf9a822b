//! FILETIME helpers: KMS carries times as 100-ns ticks since 1601-01-01 UTC.

/// 100-ns ticks between 1601-01-01 and 1970-01-01.
pub const UNIX_EPOCH_FILETIME: u64 = 116_444_736_000_000_000;

/// Converts Unix milliseconds to a FILETIME.
pub fn filetime_from_unix_ms(ms: u64) -> u64 {
    UNIX_EPOCH_FILETIME.saturating_add(ms.saturating_mul(10_000))
}

/// Converts a FILETIME to Unix milliseconds (0 for times before 1970).
pub fn unix_ms_from_filetime(ft: u64) -> u64 {
    ft.saturating_sub(UNIX_EPOCH_FILETIME) / 10_000
}

/// Absolute difference of two FILETIMEs in milliseconds.
pub fn skew_ms(a: u64, b: u64) -> u64 {
    a.abs_diff(b) / 10_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_time() {
        // 2026-11-24T01:59:12Z from the v6 capture.
        let ft = 134_399_591_520_000_000;
        assert_eq!(unix_ms_from_filetime(ft), 1_795_485_552_000);
        assert_eq!(filetime_from_unix_ms(1_795_485_552_000), ft);
        assert_eq!(skew_ms(ft, ft + 10_000_000), 1000);
    }
}
