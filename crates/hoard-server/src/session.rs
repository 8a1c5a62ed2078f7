//! Web UI sessions: after a sign-in with a password (or a token), the
//! browser holds a cookie that names the user (or the token's hash) and
//! an expiry, sealed with an HMAC. Nothing is stored: the key comes from
//! this node's admin token, and the MAC covers the user's current
//! password hash, so a new password, a revoked token or a new admin token
//! ends every session. A session is good on the node that issued it.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;

type HmacSha256 = Hmac<sha2::Sha256>;

/// The cookie's name.
pub const COOKIE: &str = "hoard_session";
/// How long a session lasts, in seconds.
pub const LIFETIME_SECS: i64 = 12 * 60 * 60;
const VERSION: &str = "v1";

/// Whom a session stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    User(String),
    /// A token, by the hex of its hash (never the token itself).
    Token(String),
    /// The holder of the node's admin token.
    NodeAdmin,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

fn mac(key: &[u8], head: &str, credential: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(head.as_bytes());
    mac.update(&[0]);
    mac.update(credential);
    mac
}

/// The cookie value for `subject` until `expires` (Unix seconds).
/// `credential` is what must not have changed for the session to hold:
/// the user's stored password hash, or the token's hash.
pub fn seal(key: &[u8], subject: &Subject, expires: i64, credential: &[u8]) -> String {
    let (kind, name) = match subject {
        Subject::User(name) => ("u", name.as_str()),
        Subject::Token(hash) => ("t", hash.as_str()),
        Subject::NodeAdmin => ("a", ""),
    };
    let head = format!("{VERSION}.{kind}.{}.{expires}", b64().encode(name));
    let tag = mac(key, &head, credential).finalize().into_bytes();
    format!("{head}.{}", b64().encode(tag))
}

/// The subject of a cookie value that `key` sealed, unexpired at `now`,
/// whose credential (looked up by `credential`) is unchanged.
pub fn open(
    key: &[u8],
    value: &str,
    now: i64,
    credential: impl FnOnce(&Subject) -> Option<Vec<u8>>,
) -> Option<Subject> {
    let (head, tag) = value.rsplit_once('.')?;
    let mut parts = head.split('.');
    let (version, kind, name, expires) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != VERSION || parts.next().is_some() {
        return None;
    }
    if expires.parse::<i64>().ok()? <= now {
        return None;
    }
    let name = String::from_utf8(b64().decode(name).ok()?).ok()?;
    let subject = match kind {
        "u" => Subject::User(name),
        "t" => Subject::Token(name),
        "a" if name.is_empty() => Subject::NodeAdmin,
        _ => return None,
    };
    let tag = b64().decode(tag).ok()?;
    let credential = credential(&subject)?;
    mac(key, head, &credential).verify_slice(&tag).ok()?;
    Some(subject)
}

/// The session cookie's value among a request's cookies.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// The `Set-Cookie` value that starts a session (`Some`) or ends one.
/// Scoped to the UI, so the package APIs never take a cookie as
/// credentials (and so are not open to cross-site requests).
pub fn set_cookie(value: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some(v) => format!(
            "{COOKIE}={v}; Path=/+ui; Max-Age={LIFETIME_SECS}; HttpOnly; SameSite=Lax{secure}"
        ),
        None => format!("{COOKIE}=; Path=/+ui; Max-Age=0; HttpOnly; SameSite=Lax{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"node key";

    fn alice(_: &Subject) -> Option<Vec<u8>> {
        Some(b"$argon2id$alice".to_vec())
    }

    #[test]
    fn a_sealed_session_opens_until_it_expires() {
        let value = seal(
            KEY,
            &Subject::User("alice".into()),
            1000,
            b"$argon2id$alice",
        );
        assert_eq!(
            open(KEY, &value, 999, alice),
            Some(Subject::User("alice".into()))
        );
        assert_eq!(open(KEY, &value, 1000, alice), None);
        let token = seal(KEY, &Subject::Token("ab12".into()), 1000, b"ab12");
        assert_eq!(
            open(KEY, &token, 5, |_| Some(b"ab12".to_vec())),
            Some(Subject::Token("ab12".into()))
        );
        // A revoked token has no credential left.
        assert_eq!(open(KEY, &token, 5, |_| None), None);
    }

    #[test]
    fn a_changed_password_key_or_value_opens_nothing() {
        let value = seal(
            KEY,
            &Subject::User("alice".into()),
            1000,
            b"$argon2id$alice",
        );
        assert_eq!(open(b"other key", &value, 5, alice), None);
        assert_eq!(
            open(KEY, &value, 5, |_| Some(b"$argon2id$new".to_vec())),
            None
        );
        // Another name, or a later expiry, under the same tag.
        let (head, tag) = value.rsplit_once('.').unwrap();
        let bob = head.replace(&b64().encode("alice"), &b64().encode("bob"));
        assert_eq!(open(KEY, &format!("{bob}.{tag}"), 5, alice), None);
        let later = head.replace(".1000", ".9999");
        assert_eq!(open(KEY, &format!("{later}.{tag}"), 5, alice), None);
        for junk in [
            "",
            ".",
            "v1.u",
            "v1.u.YWxpY2U.1000.",
            "v2.u.YWxpY2U.1000.AA",
            "v1.x.YWxpY2U.1000.AA",
        ] {
            assert_eq!(open(KEY, junk, 5, alice), None, "{junk:?}");
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            "a=1; hoard_session=v1.x".parse().unwrap(),
        );
        assert_eq!(cookie(&headers), Some("v1.x"));
        assert!(set_cookie(Some("v"), true).contains("; Secure"));
        assert!(set_cookie(None, false).contains("Max-Age=0"));
    }
}
