//! Sealing the 123pan access token at rest, so that producers (who share the database) can't
//! read a token that opens the whole 123pan account.
//!
//! Invariants: a sealed token is `v1:` + base64(nonce ‖ XChaCha20-Poly1305 ciphertext), under
//! a key derived with HKDF-SHA256 from the client secret, which only the worker holds. A
//! random 24-byte nonce from the kernel is used per seal. Anything that does not open (a token
//! stored in plain text by an older purgeq, another secret's seal, a tampered value) is
//! `None`: the caller renews the token, it never fails on it.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::secret::Secret;

/// The prefix of a sealed value; a value without it is an old plain token.
const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;
/// The HKDF info string: a key for this use only.
const INFO: &[u8] = b"purgeq 123pan access token seal v1";

fn cipher(client_secret: &Secret) -> XChaCha20Poly1305 {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"purgeq"), client_secret.expose().as_bytes());
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
    let _ = hk.expand(INFO, &mut key);
    XChaCha20Poly1305::new(&key.into())
}

fn random_nonce() -> std::io::Result<[u8; NONCE_LEN]> {
    use std::io::Read as _;
    let mut nonce = [0u8; NONCE_LEN];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut nonce)?;
    Ok(nonce)
}

/// Seals `token` for storage; `None` if no random nonce could be drawn or sealing failed
/// (the caller then keeps the token in memory only).
pub fn seal(client_secret: &Secret, token: &Secret) -> Option<Secret> {
    let nonce = random_nonce().ok()?;
    let sealed = cipher(client_secret)
        .encrypt(&XNonce::from(nonce), token.expose().as_bytes())
        .ok()?;
    let mut bytes = nonce.to_vec();
    bytes.extend(sealed);
    let text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    Some(Secret::new(format!("{PREFIX}{text}")))
}

/// Opens a stored value; `None` when it is not a seal of this client secret (a plain token
/// from an older purgeq included).
pub fn open(client_secret: &Secret, stored: &Secret) -> Option<Secret> {
    let text = stored.expose().strip_prefix(PREFIX)?;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let plain = cipher(client_secret)
        .decrypt(&XNonce::from(nonce), sealed)
        .ok()?;
    String::from_utf8(plain).ok().map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_opens_only_with_its_secret_and_hides_the_token() {
        let secret = Secret::new("client-secret");
        let token = Secret::new("eyJ.token.value");
        let sealed = seal(&secret, &token).unwrap();
        assert!(sealed.expose().starts_with("v1:"));
        assert!(!sealed.expose().contains("token.value"));
        assert_eq!(open(&secret, &sealed), Some(token.clone()));
        assert_eq!(open(&Secret::new("other"), &sealed), None);
        assert_eq!(open(&secret, &token), None, "a plain token is renewed");
        // One base64 character of the ciphertext changed (never to itself).
        let mut tampered: Vec<char> = sealed.expose().chars().collect();
        tampered[10] = if tampered[10] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        assert_eq!(open(&secret, &Secret::new(tampered)), None);
        assert_ne!(
            seal(&secret, &token),
            Some(sealed),
            "a fresh nonce per seal"
        );
    }
}
