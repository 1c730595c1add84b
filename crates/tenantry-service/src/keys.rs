//! API keys: `tk_<key id>_<secret>`, a 256-bit random secret, stored only as HMAC-SHA256 under a server
//! pepper and compared in constant time. The key id is public (it names the row); the secret never leaves
//! this module except once, in the response that creates it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tenantry_domain::ApiKeyId;

pub const KEY_PREFIX: &str = "tk_";

/// Hashes and checks key secrets under one pepper.
#[derive(Clone)]
pub struct KeyHasher {
    pepper: Vec<u8>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

/// A key as shown to its owner, once.
pub struct IssuedKey {
    pub id: ApiKeyId,
    pub plaintext: String,
    pub secret_hash: String,
}

impl KeyHasher {
    pub fn new(pepper: Vec<u8>) -> Self {
        Self { pepper }
    }

    pub fn issue(&self) -> IssuedKey {
        let id = ApiKeyId::generate();
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let secret = URL_SAFE_NO_PAD.encode(secret);
        let id_hex = id.as_str().trim_start_matches("key_");
        IssuedKey { plaintext: format!("{KEY_PREFIX}{id_hex}_{secret}"), secret_hash: self.hash(&secret), id }
    }

    pub fn hash(&self, secret: &str) -> String {
        #[allow(clippy::expect_used)] // HMAC takes a key of any length
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.pepper).expect("hmac accepts any key length");
        mac.update(secret.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn verify(&self, secret: &str, stored_hash: &str) -> bool {
        self.hash(secret).as_bytes().ct_eq(stored_hash.as_bytes()).into()
    }
}

/// Splits a presented key into its id and secret; `None` for anything malformed.
pub fn parse(presented: &str) -> Option<(ApiKeyId, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id_hex, secret) = rest.split_once('_')?;
    let id = ApiKeyId::parse(&format!("key_{id_hex}"))?;
    (secret.len() == 43 && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_parse_and_verify() {
        let h = KeyHasher::new(b"pepper".to_vec());
        let k = h.issue();
        assert!(k.plaintext.starts_with("tk_"));
        let (id, secret) = parse(&k.plaintext).expect("well formed");
        assert_eq!(id, k.id);
        assert!(h.verify(secret, &k.secret_hash));
        assert!(!h.verify("x", &k.secret_hash));
        assert!(!KeyHasher::new(b"other".to_vec()).verify(secret, &k.secret_hash));
        assert!(!k.secret_hash.contains(secret));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "tk_",
            "tk_not_a_real_key",
            "sk_abc",
            "tk_0123_short",
            &format!("tk_{}_{}", "g".repeat(32), "a".repeat(43)),
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
