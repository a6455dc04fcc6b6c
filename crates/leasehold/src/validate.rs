//! Validation of the settings callers give (lease lengths, capacities), in one place, with errors that
//! say what to fix.

use std::time::Duration;

use crate::error::{human, Error, Result};
use crate::lease::{MAX_TTL, MIN_TTL};

/// The most permits a semaphore may have.
pub const MAX_PERMITS: u32 = 100_000;

/// Check how many permits one acquire asks of a semaphore with `capacity`; the error
/// says what to fix.
pub(crate) fn validate_permits(permits: u32, capacity: u32) -> Result<()> {
    let most = capacity.min(MAX_PERMITS_PER_GRANT);
    if permits == 0 || permits > most {
        return Err(Error::invalid(format!(
            "{permits} permits cannot be granted at once by a semaphore of {capacity}: ask for 1 to {most}"
        )));
    }
    Ok(())
}

/// The most permits one acquire may take at once ([`Semaphore::acquire_many`]): a grant
/// of n permits costs the server O(n) on every renewal and release.
///
/// [`Semaphore::acquire_many`]: crate::Semaphore::acquire_many
pub const MAX_PERMITS_PER_GRANT: u32 = 1_000;

/// Check a semaphore's capacity; the error says what to fix.
pub(crate) fn validate_capacity(capacity: u32) -> Result<()> {
    if capacity == 0 || capacity > MAX_PERMITS {
        return Err(Error::invalid(format!(
            "semaphore capacity {capacity} is out of range: use 1 to {MAX_PERMITS} permits"
        )));
    }
    Ok(())
}

/// The longest owner id [`Owner::named`](crate::Owner::named) accepts, in bytes.
pub const MAX_OWNER_ID_LEN: usize = 128;

/// Check a caller-chosen owner id; the error says what to fix.
pub(crate) fn validate_owner_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_OWNER_ID_LEN {
        return Err(Error::invalid(format!(
            "owner id {id:?} is {} bytes long: use 1 to {MAX_OWNER_ID_LEN}",
            id.len()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:@/+=".contains(*c)))
    {
        return Err(Error::invalid(format!(
            "owner id {id:?} contains {c:?}: use ASCII letters, digits and - _ . : @ / + ="
        )));
    }
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "owner id {id:?} looks like a random owner id (32 hex digits): choose a name \
             that cannot collide with one, such as a service and host name"
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
    fn owner_ids_are_checked_for_length_characters_and_the_random_shape() {
        assert!(validate_owner_id("billing@host-7").is_ok());
        assert!(validate_owner_id("a").is_ok());
        assert!(validate_owner_id(&"x".repeat(MAX_OWNER_ID_LEN)).is_ok());
        for bad in [
            "",
            "has space",
            "new\nline",
            "tab\t",
            "é",
            "{tag}",
            "quote\"",
        ] {
            let err = validate_owner_id(bad).unwrap_err();
            assert!(err.is_invalid_input(), "{bad:?}: {err}");
        }
        assert!(validate_owner_id(&"x".repeat(MAX_OWNER_ID_LEN + 1)).is_err());
        assert!(validate_owner_id(&"0123456789abcdef".repeat(2)).is_err());
        assert!(validate_owner_id(&"0123456789abcdef".repeat(2)[1..]).is_ok());
    }

    #[test]
    fn ttl_bounds_are_enforced() {
        assert!(validate_ttl(Duration::ZERO).unwrap_err().is_invalid_input());
        assert!(validate_ttl(Duration::from_millis(9)).is_err());
        assert!(validate_ttl(Duration::from_secs(25 * 3600)).is_err());
        assert!(validate_ttl(Duration::from_secs(30)).is_ok());
    }
}
