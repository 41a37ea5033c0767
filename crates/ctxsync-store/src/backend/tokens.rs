//! Bearer tokens as every backend stores them: only a BLAKE3 hash of the secret is kept,
//! and the public id is a prefix of that hash (enough to name a token in `token revoke`,
//! useless for authenticating).

use crate::error::StoreError;

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// The public id of the token whose stored hash is `hash`.
pub fn token_id(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// The checks of a new token: an agent that is a name, a secret long enough.
pub fn check_new_token(agent: &str, secret: &str) -> Result<(), StoreError> {
    crate::validate_agent_name(agent)?;
    if secret.len() < 16 {
        return Err(StoreError::Invalid(
            "a token secret needs at least 16 characters".into(),
        ));
    }
    Ok(())
}
