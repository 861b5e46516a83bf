//! API keys: `llk_<key id>_<secret>`. The key id (12 hex digits) is public and names the key in
//! listings and the audit log; the whole key is shown once at creation and stored only as its
//! SHA-256. Randomness comes from the OS (UUID v4: 122 random bits each).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every tenant key starts with this.
pub const PREFIX: &str = "llk_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 48;

/// A fresh key and its id.
pub fn generate() -> (String, String) {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    let c = uuid::Uuid::new_v4().simple().to_string();
    let id = a[..ID_LEN].to_string();
    // the version/variant digits (positions 12 and 16) are not random: skip them
    let secret: String = [&b[..12], &b[17..], &c[..12], &c[17..]].concat();
    let key = format!("{PREFIX}{id}_{}", &secret[..SECRET_LEN]);
    (key, id)
}

/// Whether a presented bearer token is meant as a tenant key (it may still be wrong).
pub fn looks_like_key(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// The key id of a well-formed key.
pub fn key_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == ID_LEN
        && secret.len() == SECRET_LEN
        && id
            .bytes()
            .chain(secret.bytes())
            .all(|b| b.is_ascii_hexdigit()))
    .then_some(id)
}

/// SHA-256 of the key, hex.
pub fn hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `key` hashes to `stored`, in time independent of where they differ.
pub fn matches(key: &str, stored: &str) -> bool {
    hash(key).as_bytes().ct_eq(stored.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_parseable_and_hashed() {
        let (k1, id1) = generate();
        let (k2, id2) = generate();
        assert_ne!(k1, k2);
        assert_ne!(id1, id2);
        assert_eq!(key_id(&k1), Some(id1.as_str()));
        assert!(looks_like_key(&k1));
        let h = hash(&k1);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&k1[PREFIX.len()..]));
        assert!(matches(&k1, &h));
        assert!(!matches(&k2, &h));
        assert_eq!(key_id("llk_short_x"), None);
        assert_eq!(key_id(&k1[..k1.len() - 1]), None);
    }
}
