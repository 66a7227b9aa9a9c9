//! Access tokens: EdDSA-signed JWTs. The user service signs with the private key; every
//! other service verifies with the public key only.
//!
//! Development keys are generated on first start into `<data_dir>/keys/` (mode 0600 for
//! the private key) and never committed. Production installs put their own PEM files there.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tillstream_events::Role;

const PRIVATE_KEY_FILE: &str = "jwt-ed25519.pem";
const PUBLIC_KEY_FILE: &str = "jwt-ed25519.pub.pem";
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
}

impl KeyPaths {
    pub fn in_dir(data_dir: &Path) -> Self {
        let keys = data_dir.join("keys");
        KeyPaths {
            private: keys.join(PRIVATE_KEY_FILE),
            public: keys.join(PUBLIC_KEY_FILE),
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

/// Signs access tokens (user service only).
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
    lifetime: Duration,
}

impl TokenIssuer {
    pub fn load(paths: &KeyPaths, lifetime: Duration) -> Result<Self, TokenError> {
        let key =
            EncodingKey::from_ed_pem(&read(&paths.private)?).map_err(TokenError::InvalidKey)?;
        Ok(TokenIssuer { key, lifetime })
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
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
            .map_err(TokenError::Sign)
    }
}

/// Verifies access tokens with the public key: signature, algorithm (EdDSA only, so
/// `alg: none` and HMAC confusion are refused), expiry, issuer and audience.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn load(paths: &KeyPaths) -> Result<Self, TokenError> {
        if !paths.public.exists() {
            return Err(TokenError::MissingPublicKey(paths.public.clone()));
        }
        let key =
            DecodingKey::from_ed_pem(&read(&paths.public)?).map_err(TokenError::InvalidKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = 5;
        Ok(TokenVerifier { key, validation })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
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
