//! `rsadecrypt(ciphertext, privatekey)`, as go-cty-funcs' `RsaDecryptFunc`
//! (which buildx registers): the ciphertext is base64, the key a PEM RSA
//! private key (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`; Go's
//! `ssh.ParseRawPrivateKey` also reads OpenSSH's own format, which is
//! refused here with a hint), the padding PKCS#1 v1.5.
//!
//! RUSTSEC-2023-0071 ("Marvin"): the `rsa` crate's decryption time depends
//! on secret data, so an attacker who can submit many chosen ciphertexts and
//! time each decryption precisely can recover the plaintext or forge
//! signatures. That needs a decryption oracle — a service decrypting
//! attacker-chosen input on request, timed over the network. Here rbuild
//! decrypts, once per call, a value written in a bake file the invoking
//! user chose, in a short-lived local process. Whoever writes the bake file
//! and can see the build's timing is already able to read the key itself
//! (`args = { K = KEY }`), so the side channel gives nothing the file does
//! not. Go's `DecryptPKCS1v15`, which buildx uses, is not constant-time
//! either in the presence of a timing observer of this kind.

use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey};

/// Why `rsadecrypt` failed (go-cty-funcs' messages).
#[derive(Debug, thiserror::Error)]
pub enum RsaDecryptError {
    /// The ciphertext is not base64.
    #[error("failed to decode input {0:?}: cipher text must be base64-encoded")]
    Base64(String),
    /// The key is not a PEM RSA private key.
    #[error("invalid private key: {0}")]
    Key(String),
    /// Decryption failed (wrong key, bad padding, wrong length).
    #[error("failed to decrypt: {0}")]
    Decrypt(#[source] rsa::Error),
}

fn private_key(pem: &str) -> Result<RsaPrivateKey, RsaDecryptError> {
    let trimmed = pem.trim_start();
    if trimmed.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
        return RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| RsaDecryptError::Key(e.to_string()));
    }
    if trimmed.starts_with("-----BEGIN PRIVATE KEY-----") {
        return RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| RsaDecryptError::Key(e.to_string()));
    }
    if trimmed.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
        return Err(RsaDecryptError::Key(
            "OpenSSH-format keys are not read; convert it with `ssh-keygen -p -m PEM -f KEY`".into(),
        ));
    }
    Err(RsaDecryptError::Key("ssh: no key found".into()))
}

/// Decrypts base64 `ciphertext` with the PEM `key`; the plaintext must be
/// UTF-8 (bake values are strings).
pub fn rsadecrypt(ciphertext: &str, key: &str) -> Result<String, RsaDecryptError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(ciphertext)
        .map_err(|_| RsaDecryptError::Base64(ciphertext.to_string()))?;
    let key = private_key(key)?;
    let plain = key.decrypt(Pkcs1v15Encrypt, &bytes).map_err(RsaDecryptError::Decrypt)?;
    String::from_utf8(plain).map_err(|_| RsaDecryptError::Key("the plaintext is not UTF-8 text".into()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 1024-bit test key (PKCS#1), made with
    /// `openssl genrsa -traditional 1024`, and `hello` encrypted to it with
    /// `openssl pkeyutl -encrypt -pkeyopt rsa_padding_mode:pkcs1 | base64 -w0`.
    pub(crate) const KEY: &str = include_str!("../../../../testdata/bake/functions-crypto/key.pem");
    pub(crate) const CIPHERTEXT: &str = include_str!("../../../../testdata/bake/functions-crypto/hello.b64");

    #[test]
    fn decrypts_what_openssl_encrypted() {
        assert_eq!(rsadecrypt(CIPHERTEXT.trim(), KEY).unwrap(), "hello");
    }

    #[test]
    fn refuses_bad_input_with_go_cty_funcs_messages() {
        let err = rsadecrypt("not base64!", KEY).unwrap_err().to_string();
        assert!(err.contains("cipher text must be base64-encoded"), "{err}");
        let err = rsadecrypt(CIPHERTEXT.trim(), "garbage").unwrap_err().to_string();
        assert!(err.starts_with("invalid private key"), "{err}");
        let err = rsadecrypt("aGVsbG8=", KEY).unwrap_err().to_string();
        assert!(err.starts_with("failed to decrypt"), "{err}");
        let err = rsadecrypt(CIPHERTEXT.trim(), "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap_err().to_string();
        assert!(err.contains("ssh-keygen"), "{err}");
    }
}
