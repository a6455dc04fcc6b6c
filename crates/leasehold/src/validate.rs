//! Validation of the settings callers give (lease lengths, capacities), in one place, with errors that
//! say what to fix.

use std::time::Duration;

use crate::error::{human, Error, Result};
use crate::lease::{MAX_TTL, MIN_TTL};

/// The most permits a semaphore may have.
pub const MAX_PERMITS: u32 = 100_000;

/// Check a semaphore's capacity; the error says what to fix.
pub(crate) fn validate_capacity(capacity: u32) -> Result<()> {
    if capacity == 0 || capacity > MAX_PERMITS {
        return Err(Error::invalid(format!(
            "semaphore capacity {capacity} is out of range: use 1 to {MAX_PERMITS} permits"
        )));
    }
    Ok(())
}

/// Check a lease length; the error says what to fix.
pub(crate) fn validate_ttl(ttl: Duration) -> Result<()> {
    if ttl < MIN_TTL {
        return Err(Error::invalid(format!(
            "lease TTL {} is too short: use at least {}",
            human(ttl),
            human(MIN_TTL)
        )));
    }
    if ttl > MAX_TTL {
        return Err(Error::invalid(format!(
            "lease TTL {} is too long: use at most {} (renew long work with extend)",
            human(ttl),
            human(MAX_TTL)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds_are_enforced() {
        assert!(validate_ttl(Duration::ZERO).unwrap_err().is_invalid_input());
        assert!(validate_ttl(Duration::from_millis(9)).is_err());
        assert!(validate_ttl(Duration::from_secs(25 * 3600)).is_err());
        assert!(validate_ttl(Duration::from_secs(30)).is_ok());
    }
}
