//! Who a request comes from, and what they may do: the node's admin
//! token, access tokens (with their repository, project and expiry
//! scopes), and users signing in with a password. Passwords are hashed
//! with argon2id; the sha256 hashes of older configs are still checked,
//! and replaced on the next successful sign-in.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hoard_core::{Perm, RepoName, Sha256, TokenRecord, UserRecord};

/// The prefix of a password hash carried over from a config's
/// `password_sha256`: unsalted, so it is replaced by an argon2id hash the
/// first time its user signs in.
const LEGACY_SHA256: &str = "sha256:";

/// Who made a request.
#[derive(Clone, Debug)]
pub enum Principal {
    /// The holder of this node's `admin-token` file.
    NodeAdmin,
    Token(TokenRecord),
    /// A user who signed in with their password (HTTP Basic).
    User(UserRecord),
}

impl Principal {
    pub fn allows(&self, repo: &RepoName, needed: Perm) -> bool {
        match self {
            Principal::NodeAdmin => true,
            Principal::Token(t) => t.allows(repo, needed),
            // A user reads every repository and uploads to any hosted one,
            // bound by package ownership; an admin user administers.
            Principal::User(u) => u.admin || needed <= Perm::Upload,
        }
    }

    /// Whether this principal may write to `project` (normalized) at all;
    /// ownership is checked when the change is applied.
    pub fn allows_project(&self, project: &str) -> bool {
        match self {
            Principal::Token(t) => t.allows_project(project),
            Principal::NodeAdmin | Principal::User(_) => true,
        }
    }

    /// Whether this principal administers the whole node.
    pub fn is_global_admin(&self) -> bool {
        match self {
            Principal::NodeAdmin => true,
            Principal::Token(t) => t.perm == Perm::Admin && t.repo.is_none(),
            Principal::User(u) => u.admin,
        }
    }

    /// The actor recorded in events made by this principal.
    pub fn actor(&self) -> String {
        match self {
            Principal::NodeAdmin => "admin".into(),
            Principal::Token(t) => t.label.clone(),
            Principal::User(u) => u.name.clone(),
        }
    }

    /// The user whose package ownership binds this principal's changes
    /// (`Event::user`). Admin tokens and service tokens (no user) are not
    /// bound; an admin user is, and passes as an admin when applied.
    pub fn acting_user(&self) -> Option<String> {
        match self {
            Principal::NodeAdmin => None,
            Principal::Token(t) if t.perm == Perm::Admin => None,
            Principal::Token(t) => t.user.clone(),
            Principal::User(u) => Some(u.name.clone()),
        }
    }
}

/// A new argon2id PHC string for `password`, with a random salt.
pub fn hash_password(password: &str) -> String {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).expect("16 bytes make a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// Whether `hash` is an argon2id PHC string that [`password_matches`]
/// can check: another system's (devpi keeps the same kind), carried over
/// by an import, so that its users keep their passwords.
pub fn is_argon2id_phc(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str() == "argon2id" && h.hash.is_some())
}

/// The stored form of a config's hex `password_sha256`.
pub fn legacy_password_hash(sha256_hex: &str) -> String {
    format!("{LEGACY_SHA256}{}", sha256_hex.trim().to_ascii_lowercase())
}

/// Whether a stored hash is a carried-over sha256 one, to be replaced.
pub fn is_legacy_hash(stored: &str) -> bool {
    stored.starts_with(LEGACY_SHA256)
}

/// Checks `password` against a stored hash: argon2id PHC, or a legacy
/// sha256. An unreadable stored hash matches nothing.
pub fn password_matches(stored: &str, password: &str) -> bool {
    if let Some(hex) = stored.strip_prefix(LEGACY_SHA256) {
        return Sha256::of(password.as_bytes()).to_hex() == hex;
    }
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Passwords already checked against a user's current stored hash, so
/// that pip, which sends its credentials with every request, pays for
/// argon2 once per user rather than per request. Keyed by user; an entry
/// holds only if the stored hash is still the one it was checked against.
#[derive(Default)]
pub struct PasswordCache {
    checked: Mutex<HashMap<String, (String, Sha256)>>,
}

impl PasswordCache {
    pub fn verify(&self, user: &UserRecord, password: &str) -> bool {
        let digest = Sha256::of(password.as_bytes());
        let cached = self
            .checked
            .lock()
            .ok()
            .and_then(|m| m.get(&user.name).cloned());
        if let Some((stored, d)) = cached {
            if stored == user.password_hash && d == digest {
                return true;
            }
        }
        if !password_matches(&user.password_hash, password) {
            return false;
        }
        if let Ok(mut m) = self.checked.lock() {
            m.insert(user.name.clone(), (user.password_hash.clone(), digest));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_systems_argon2id_hash_is_accepted_and_checks_its_password() {
        // As devpi-server 6 stores a password (m=64 MiB, t=3, p=4).
        let params = argon2::Params::new(65536, 3, 4, None).unwrap();
        let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let devpi = argon.hash_password(b"alicepw", &salt).unwrap().to_string();
        assert!(is_argon2id_phc(&devpi));
        assert!(password_matches(&devpi, "alicepw"));
        assert!(!password_matches(&devpi, "other"));
        for bad in [
            "",
            "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
            "plain",
            "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ",
        ] {
            assert!(!is_argon2id_phc(bad), "{bad}");
        }
    }

    fn user(hash: String) -> UserRecord {
        UserRecord {
            name: "alice".into(),
            password_hash: hash,
            admin: false,
            email: None,
        }
    }

    #[test]
    fn argon2_hashes_are_salted_and_check() {
        let a = hash_password("s3cret");
        let b = hash_password("s3cret");
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(password_matches(&a, "s3cret"));
        assert!(!password_matches(&a, "s3cret "));
        assert!(!password_matches("garbage", "s3cret"));
    }

    #[test]
    fn legacy_sha256_hashes_still_check() {
        let legacy = legacy_password_hash(&Sha256::of(b"pw").to_hex().to_uppercase());
        assert!(is_legacy_hash(&legacy));
        assert!(password_matches(&legacy, "pw"));
        assert!(!password_matches(&legacy, "other"));
    }

    #[test]
    fn the_cache_follows_the_stored_hash() {
        let cache = PasswordCache::default();
        let first = user(hash_password("one"));
        assert!(cache.verify(&first, "one"));
        assert!(cache.verify(&first, "one"));
        assert!(!cache.verify(&first, "two"));
        // After a password change the old password no longer passes.
        let changed = user(hash_password("two"));
        assert!(!cache.verify(&changed, "one"));
        assert!(cache.verify(&changed, "two"));
    }

    #[test]
    fn ownership_binds_users_and_their_tokens_not_admins() {
        let token = TokenRecord {
            hash: Sha256::of(b"t"),
            repo: None,
            perm: Perm::Upload,
            label: "alice".into(),
            id: String::new(),
            user: Some("alice".into()),
            projects: Some(vec!["demo".into()]),
            expires_us: None,
        };
        let p = Principal::Token(token.clone());
        assert_eq!(p.acting_user().as_deref(), Some("alice"));
        assert!(p.allows_project("demo") && !p.allows_project("other"));
        let admin = Principal::Token(TokenRecord {
            perm: Perm::Admin,
            ..token.clone()
        });
        assert_eq!(admin.acting_user(), None);
        let service = Principal::Token(TokenRecord {
            user: None,
            ..token
        });
        assert_eq!(service.acting_user(), None);
        assert_eq!(Principal::NodeAdmin.acting_user(), None);
        let u = Principal::User(user(String::new()));
        assert!(u.allows(&"pypi".parse().unwrap(), Perm::Upload));
        assert!(!u.allows(&"pypi".parse().unwrap(), Perm::Admin));
    }
}
