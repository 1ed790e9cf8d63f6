//! User passwords: Argon2id with the crate's recommended parameters, in PHC strings.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use keyward_core::RawSecret;

use super::{ServiceError, ServiceResult};

/// Shortest and longest password accepted.
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 12..=1024;

/// Hashes a new password, refusing ones outside [`PASSWORD_CHARS`].
pub fn hash_password(password: &RawSecret) -> ServiceResult<String> {
    let chars = password.expose().chars().count();
    if !PASSWORD_CHARS.contains(&chars) {
        return Err(ServiceError::BadPassword);
    }
    Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(format!("password hashing failed: {e}")))
}

/// Checks a password against a stored PHC string (constant-time inside argon2).
pub fn verify_password(password: &RawSecret, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.expose().as_bytes(), phc)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_refuse_short_passwords() {
        let pw = RawSecret::new("correct horse battery".to_owned());
        let phc = hash_password(&pw).unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("correct horse"));
        assert!(verify_password(&pw, &phc));
        assert!(!verify_password(
            &RawSecret::new("wrong horse battery".to_owned()),
            &phc
        ));
        assert!(matches!(
            hash_password(&RawSecret::new("short".to_owned())),
            Err(ServiceError::BadPassword)
        ));
    }
}
