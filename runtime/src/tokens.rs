//! Access tokens: EdDSA-signed JWTs. The user service signs with the private key; every
//! other service verifies with the public key only.
//!
//! Development keys are generated on first start into `<data_dir>/keys/` (mode 0600 for
//! the private key) and never committed. Production installs put their own PEM files there.
//!
//! Key rotation: every token names its signing key in the JWT header (`kid`, a
//! fingerprint of the public key). Verifiers accept the current public key and every
//! public key listed in `<data_dir>/keys-retired/*.pem`, chosen by `kid`; a token naming
//! any other key is refused. To rotate: copy `keys/jwt-ed25519.pub.pem` into
//! `keys-retired/`, remove `keys/`, restart the user service (it generates a new pair), then
//! give the verifiers the new public key and restart them. Tokens signed with the old key
//! keep working until they expire or its file is removed from `keys-retired/`. A token
//! without `kid` (issued before rotation existed) is checked against the current key.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::HashMap;
use std::sync::Arc;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tillstream_events::Role;

const PRIVATE_KEY_FILE: &str = "jwt-ed25519.pem";
const PUBLIC_KEY_FILE: &str = "jwt-ed25519.pub.pem";
/// Beside `keys/`: public keys no longer signing, still accepted by `kid`.
const RETIRED_DIR: &str = "keys-retired";
/// `iss` and `aud` of every token this installation issues.
const ISSUER: &str = "tillstream";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or write key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no token verification key at {0}: start the user service once (it generates the key pair) \
         or install the user service's public key there"
    )]
    MissingPublicKey(PathBuf),
    #[error("cannot generate a key: {0}")]
    Generate(String),
    #[error("invalid key: {0}")]
    InvalidKey(#[source] jsonwebtoken::errors::Error),
    #[error("cannot sign token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("invalid token: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("key file {path} is not an Ed25519 PEM key: {reason}")]
    KeyFormat { path: PathBuf, reason: String },
    #[error("the token names key `{0}`, which is not a current or retired key")]
    UnknownKey(String),
}

/// What a token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    pub iss: String,
    pub aud: String,
}

/// Where the PEM files live.
#[derive(Debug, Clone)]
pub struct KeyPaths {
    pub private: PathBuf,
    pub public: PathBuf,
    /// Folder of retired public keys (`*.pem`), still accepted for the tokens they signed.
    pub retired: PathBuf,
}

impl KeyPaths {
    pub fn in_dir(data_dir: &Path) -> Self {
        let keys = data_dir.join("keys");
        KeyPaths {
            private: keys.join(PRIVATE_KEY_FILE),
            public: keys.join(PUBLIC_KEY_FILE),
            retired: data_dir.join(RETIRED_DIR),
        }
    }

    /// Generates a key pair when the private key file does not exist yet.
    ///
    /// Several processes may start at once on a fresh data folder (`up`, or the split
    /// services): each writes its pair into a private temporary folder and renames it into
    /// place; the rename of a folder onto an existing one fails, so exactly one pair wins and
    /// the others are discarded.
    pub fn ensure_generated(&self) -> Result<(), TokenError> {
        if self.private.exists() {
            return Ok(());
        }
        let keys_dir = self
            .private
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default();
        let parent = keys_dir.parent().map(Path::to_owned).unwrap_or_default();
        std::fs::create_dir_all(&parent).map_err(|source| TokenError::KeyFile {
            path: parent.clone(),
            source,
        })?;
        let staging = parent.join(format!(".keys-{}", uuid::Uuid::new_v4().simple()));
        let result = self.write_pair(&staging).and_then(|()| {
            match std::fs::rename(&staging, &keys_dir) {
                Ok(()) => {
                    tracing::info!(path = %self.private.display(), "generated a development signing key");
                    Ok(())
                }
                // Another process won the race (or the folder exists without our files).
                Err(_) if self.private.exists() => Ok(()),
                Err(source) => Err(TokenError::KeyFile {
                    path: keys_dir.clone(),
                    source,
                }),
            }
        });
        let _ = std::fs::remove_dir_all(&staging);
        result
    }

    fn write_pair(&self, dir: &Path) -> Result<(), TokenError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| TokenError::Generate(e.to_string()))?;
        let signing = SigningKey::from_bytes(&seed);
        let private = signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| TokenError::Generate(e.to_string()))?;
        let public = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| TokenError::Generate(e.to_string()))?;
        std::fs::create_dir_all(dir).map_err(|source| TokenError::KeyFile {
            path: dir.to_owned(),
            source,
        })?;
        let private_path = dir.join(PRIVATE_KEY_FILE);
        crate::secret_file::write(&private_path, private.as_bytes()).map_err(|source| {
            TokenError::KeyFile {
                path: private_path,
                source,
            }
        })?;
        let public_path = dir.join(PUBLIC_KEY_FILE);
        std::fs::write(&public_path, public.as_bytes()).map_err(|source| TokenError::KeyFile {
            path: public_path,
            source,
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TokenError> {
    std::fs::read(path).map_err(|source| TokenError::KeyFile {
        path: path.to_owned(),
        source,
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `kid` of a public key: the first 8 bytes of its SHA-256, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    Sha256::digest(key.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn format_error(path: &Path) -> impl FnOnce(String) -> TokenError + '_ {
    move |reason| TokenError::KeyFormat {
        path: path.to_owned(),
        reason,
    }
}

/// A public key file: its `kid` and the key to verify with.
fn public_key(path: &Path) -> Result<(String, DecodingKey), TokenError> {
    let pem = read(path)?;
    let text = std::str::from_utf8(&pem).map_err(|e| format_error(path)(e.to_string()))?;
    let verifying =
        VerifyingKey::from_public_key_pem(text).map_err(|e| format_error(path)(e.to_string()))?;
    let key = DecodingKey::from_ed_pem(&pem).map_err(TokenError::InvalidKey)?;
    Ok((key_id(&verifying), key))
}

/// Signs access tokens (user service only), naming the key in the header (`kid`).
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
    kid: String,
    lifetime: Duration,
}

impl TokenIssuer {
    pub fn load(paths: &KeyPaths, lifetime: Duration) -> Result<Self, TokenError> {
        let pem = read(&paths.private)?;
        let text =
            std::str::from_utf8(&pem).map_err(|e| format_error(&paths.private)(e.to_string()))?;
        let signing = SigningKey::from_pkcs8_pem(text)
            .map_err(|e| format_error(&paths.private)(e.to_string()))?;
        let key = EncodingKey::from_ed_pem(&pem).map_err(TokenError::InvalidKey)?;
        Ok(TokenIssuer {
            key,
            kid: key_id(&signing.verifying_key()),
            lifetime,
        })
    }

    /// The `kid` this issuer writes into its tokens.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn issue(&self, user_id: &str, role: Role) -> Result<String, TokenError> {
        let iat = now();
        let claims = Claims {
            sub: user_id.to_owned(),
            role,
            iat,
            exp: iat + self.lifetime.as_secs(),
            jti: uuid::Uuid::now_v7().to_string(),
            iss: ISSUER.to_owned(),
            aud: ISSUER.to_owned(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(TokenError::Sign)
    }
}

/// Verifies access tokens with the public keys: signature with the key the token's `kid`
/// names (current or retired; any other is refused), algorithm (EdDSA only, so
/// `alg: none` and HMAC confusion are refused), expiry, issuer and audience.
///
/// A token that verified is remembered (up to [`VERIFIED_CAPACITY`] of them, by its whole
/// text) until it expires: the keys never change during the verifier's life, so the same
/// text verifies the same way until then, and a busy client's requests skip the signature
/// check (about 4 % of a GraphQL read's CPU). Cloning shares everything: the gateway's
/// middleware clones its verifier for every request.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<HashMap<String, DecodingKey>>,
    current: Arc<str>,
    validation: Arc<Validation>,
    verified: Arc<quick_cache::sync::Cache<String, Claims>>,
}

/// How many verified tokens a verifier remembers.
pub const VERIFIED_CAPACITY: usize = 10_000;

impl TokenVerifier {
    /// The current public key and every retired one in `paths.retired` (when it exists).
    pub fn load(paths: &KeyPaths) -> Result<Self, TokenError> {
        if !paths.public.exists() {
            return Err(TokenError::MissingPublicKey(paths.public.clone()));
        }
        let (current, key) = public_key(&paths.public)?;
        let mut keys = HashMap::from([(current.clone(), key)]);
        if paths.retired.is_dir() {
            let entries =
                std::fs::read_dir(&paths.retired).map_err(|source| TokenError::KeyFile {
                    path: paths.retired.clone(),
                    source,
                })?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "pem") {
                    let (kid, key) = public_key(&path)?;
                    keys.entry(kid).or_insert(key);
                }
            }
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = 5;
        Ok(TokenVerifier {
            keys: Arc::new(keys),
            current: current.into(),
            validation: Arc::new(validation),
            verified: Arc::new(quick_cache::sync::Cache::new(VERIFIED_CAPACITY)),
        })
    }

    /// The `kid`s accepted, current first.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.keys.keys().cloned().collect();
        ids.sort_by_key(|id| (**id != *self.current, id.clone()));
        ids
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if let Some(claims) = self.verified.get(token)
            && !self.expired(&claims)
        {
            return Ok(claims);
        }
        let claims = self.verify_signed(token)?;
        self.verified.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    /// Whether `claims` are past their expiry (with the validation's leeway), as a fresh
    /// verification would find.
    fn expired(&self, claims: &Claims) -> bool {
        claims.exp.saturating_add(self.validation.leeway) < now()
    }

    fn verify_signed(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(TokenError::Invalid)?;
        let kid = header.kid.unwrap_or_else(|| self.current.to_string());
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey(kid))?;
        jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(TokenError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_foreign_keys_do_not() {
        let dir = std::env::temp_dir().join(format!("ts-keys-{}", uuid::Uuid::new_v4()));
        let paths = KeyPaths::in_dir(&dir);
        paths.ensure_generated().unwrap();
        paths.ensure_generated().unwrap(); // second call keeps the first key
        let issuer = TokenIssuer::load(&paths, Duration::from_secs(60)).unwrap();
        let verifier = TokenVerifier::load(&paths).unwrap();
        let token = issuer.issue("u-1", Role::Customer).unwrap();
        let claims = verifier.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("u-1", Role::Customer));

        let other_dir = std::env::temp_dir().join(format!("ts-keys-{}", uuid::Uuid::new_v4()));
        let other = KeyPaths::in_dir(&other_dir);
        other.ensure_generated().unwrap();
        let forged = TokenIssuer::load(&other, Duration::from_secs(60)).unwrap();
        let forged_token = forged.issue("u-1", Role::Admin).unwrap();
        assert!(verifier.verify(&forged_token).is_err());
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(other_dir);
    }

    #[test]
    fn a_remembered_token_is_refused_once_it_expires() {
        let dir = std::env::temp_dir().join(format!("ts-keys-{}", uuid::Uuid::new_v4()));
        let paths = KeyPaths::in_dir(&dir);
        paths.ensure_generated().unwrap();
        let issuer = TokenIssuer::load(&paths, Duration::from_secs(60)).unwrap();
        let verifier = TokenVerifier::load(&paths).unwrap();
        let token = issuer.issue("u-1", Role::Customer).unwrap();
        let first = verifier.verify(&token).unwrap();
        assert_eq!(
            verifier.clone().verify(&token).unwrap(),
            first,
            "remembered"
        );

        // Remembered claims past their expiry (and the leeway) are not served: the token
        // is verified again, which refuses it.
        let mut stale = first.clone();
        stale.exp = now() - verifier.validation.leeway - 1;
        verifier.verified.insert(token.clone(), stale.clone());
        assert!(verifier.expired(&stale));
        assert_eq!(verifier.verify(&token).unwrap(), first, "verified afresh");
        verifier.verified.insert("not a token".to_owned(), stale);
        assert!(verifier.verify("not a token").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn retired_keys_still_verify_by_kid_and_unknown_kids_are_refused() {
        let dir = std::env::temp_dir().join(format!("ts-keys-{}", uuid::Uuid::new_v4()));
        let paths = KeyPaths::in_dir(&dir);
        paths.ensure_generated().unwrap();
        let old = TokenIssuer::load(&paths, Duration::from_secs(60)).unwrap();
        let old_token = old.issue("u-1", Role::Customer).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&old_token)
                .unwrap()
                .kid
                .as_deref(),
            Some(old.key_id())
        );

        // Rotate: retire the public key, make a new pair.
        std::fs::create_dir_all(&paths.retired).unwrap();
        std::fs::copy(&paths.public, paths.retired.join("2026-11.pem")).unwrap();
        std::fs::remove_dir_all(dir.join("keys")).unwrap();
        paths.ensure_generated().unwrap();
        let new = TokenIssuer::load(&paths, Duration::from_secs(60)).unwrap();
        assert_ne!(new.key_id(), old.key_id());
        let verifier = TokenVerifier::load(&paths).unwrap();
        assert_eq!(verifier.key_ids()[0], new.key_id(), "current key first");
        assert_eq!(verifier.key_ids().len(), 2);
        let new_token = new.issue("u-2", Role::Admin).unwrap();
        assert_eq!(verifier.verify(&new_token).unwrap().sub, "u-2");
        assert_eq!(
            verifier.verify(&old_token).unwrap().sub,
            "u-1",
            "a token of a retired, listed key verifies"
        );

        // A kid nobody lists is refused, even re-signed with a listed key's kid swapped in.
        let other_dir = std::env::temp_dir().join(format!("ts-keys-{}", uuid::Uuid::new_v4()));
        let other = KeyPaths::in_dir(&other_dir);
        other.ensure_generated().unwrap();
        let foreign = TokenIssuer::load(&other, Duration::from_secs(60)).unwrap();
        assert!(matches!(
            verifier.verify(&foreign.issue("u-1", Role::Admin).unwrap()),
            Err(TokenError::UnknownKey(_))
        ));
        let mut impostor = foreign.clone();
        impostor.kid = new.key_id().to_owned();
        assert!(matches!(
            verifier.verify(&impostor.issue("u-1", Role::Admin).unwrap()),
            Err(TokenError::Invalid(_))
        ));

        // Once its file is gone, the retired key's tokens stop working.
        std::fs::remove_dir_all(&paths.retired).unwrap();
        let verifier = TokenVerifier::load(&paths).unwrap();
        assert!(matches!(
            verifier.verify(&old_token),
            Err(TokenError::UnknownKey(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir_all(other_dir);
    }

    #[test]
    fn racing_first_starts_agree_on_one_key_pair() {
        let dir = std::env::temp_dir().join(format!("ts-keys-{}", uuid::Uuid::new_v4()));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let paths = KeyPaths::in_dir(&dir);
                std::thread::spawn(move || paths.ensure_generated())
            })
            .collect();
        for handle in handles {
            handle.join().unwrap().unwrap();
        }
        let paths = KeyPaths::in_dir(&dir);
        let token = TokenIssuer::load(&paths, Duration::from_secs(60))
            .unwrap()
            .issue("u", Role::Service)
            .unwrap();
        assert!(
            TokenVerifier::load(&paths).unwrap().verify(&token).is_ok(),
            "private and public key match"
        );
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "only keys/ remains");
        let _ = std::fs::remove_dir_all(dir);
    }
}
