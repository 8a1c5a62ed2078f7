//! Login (`npm login`, `npm adduser`), `npm whoami`, and the bodies of the
//! endpoints that hoard answers without supporting them (web login, audit).
//!
//! npm 10.8's `npm login` first `POST`s `{}` to `/-/v1/login`
//! (`{"create":true}` for `npm adduser`). Any 4xx or a 500 there makes npm
//! fall back to the legacy flow: it prompts for a username and password
//! (and email, for adduser) and sends `PUT /-/user/org.couchdb.user:{name}`
//! with a CouchDB user document, without any `Authorization`. It stores the
//! `token` of the 2xx answer as `//host/path/:_authToken`. A 400 answer
//! makes npm say `There is no user with the username "…"`; a 409 makes it
//! try a CouchDB revision update (`GET …?write=true`, `PUT …/-rev/{rev}`),
//! so answer a refusal with 401 or 403 and [`crate::error_body`].

use serde_json::{json, Value};

use crate::names::percent_decode;
use crate::NpmError;

/// Longest accepted username, in bytes.
pub const MAX_USERNAME_LEN: usize = 100;

/// The status to answer `POST /-/v1/login` with so that npm falls back to
/// the username/password flow: 404, with [`web_login_not_supported_body`].
pub const WEB_LOGIN_FALLBACK_STATUS: u16 = 404;

/// The status for [`audit_not_supported_body`]: 404 (npm does not retry
/// 4xx; 5xx answers are retried with back-off before npm gives up).
pub const AUDIT_NOT_SUPPORTED_STATUS: u16 = 404;

/// A legacy login or adduser request.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub name: String,
    pub password: String,
    /// Sent by `npm adduser` only.
    pub email: Option<String>,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("email", &self.email)
            .finish()
    }
}

/// Checks a username: 1 to 100 characters of `A-Z a-z 0-9 . _ -`, not
/// starting with `.`.
pub fn validate_username(name: &str) -> Result<(), NpmError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USERNAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NpmError::InvalidLogin(format!(
            "'{}' is not a valid username (use 1 to {MAX_USERNAME_LEN} letters, digits, '.', '_' or '-')",
            name.chars().take(MAX_USERNAME_LEN).collect::<String>()
        )))
    }
}

/// The username in the last path segment of a legacy login,
/// `org.couchdb.user:{name}` (percent-encoded).
pub fn parse_couch_user_segment(segment: &str) -> Result<String, NpmError> {
    let decoded = percent_decode(segment)
        .map_err(|_| NpmError::InvalidLogin("the username is not valid UTF-8".into()))?;
    let name = decoded
        .strip_prefix("org.couchdb.user:")
        .ok_or_else(|| NpmError::UnknownPath(format!("-/user/{segment}")))?;
    validate_username(name)?;
    Ok(name.to_owned())
}

/// Parses the body of `PUT /-/user/org.couchdb.user:{url_user}`:
/// `{_id, name, password, email?, type: "user", roles, date}`. `name` must be
/// the URL's user, `password` non-empty, `type` (if present) `"user"`.
pub fn parse_login(body: &[u8], url_user: &str) -> Result<LoginRequest, NpmError> {
    let doc = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(NpmError::MalformedJson("expected a JSON object".into())),
        Err(e) => return Err(NpmError::MalformedJson(e.to_string())),
    };
    let bad = |m: &str| Err(NpmError::InvalidLogin(m.to_owned()));
    let name = match doc.get("name") {
        Some(Value::String(n)) => n.clone(),
        _ => return bad("missing 'name'"),
    };
    if name != url_user {
        return bad("'name' is not the user in the URL");
    }
    validate_username(&name)?;
    if let Some(id) = doc.get("_id") {
        if id.as_str() != Some(format!("org.couchdb.user:{name}").as_str()) {
            return bad("'_id' must be 'org.couchdb.user:<name>'");
        }
    }
    match doc.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "user" => {}
        Some(_) => return bad("'type' must be 'user'"),
    }
    let password = match doc.get("password") {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        _ => return bad("missing 'password'"),
    };
    let email = match doc.get("email") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => Some(e.clone()),
        Some(_) => return bad("'email' must be a string"),
    };
    Ok(LoginRequest {
        name,
        password,
        email,
    })
}

/// The 201 answer to a successful legacy login: npm stores `token`.
pub fn login_ok_body(username: &str, token: &str) -> String {
    json!({
        "ok": true,
        "id": format!("org.couchdb.user:{username}"),
        "rev": "1-hoard",
        "token": token,
    })
    .to_string()
}

/// The answer to `GET /-/user/org.couchdb.user:{name}`: what `npm owner
/// add` reads about the user it adds.
pub fn user_doc(name: &str, email: Option<&str>) -> String {
    json!({
        "_id": format!("org.couchdb.user:{name}"),
        "name": name,
        "email": email.unwrap_or(""),
        "type": "user",
    })
    .to_string()
}

/// The answer to `GET /-/whoami`: `{"username": "…"}`, which `npm whoami`
/// prints.
pub fn whoami_body(username: &str) -> String {
    json!({ "username": username }).to_string()
}

/// The body for `POST /-/v1/login`, answered with
/// [`WEB_LOGIN_FALLBACK_STATUS`]: npm logs it and prompts for a username and
/// password instead.
pub fn web_login_not_supported_body() -> String {
    crate::error_body("web login is not supported by hoard; npm falls back to username and password (or put a token from `hoard token create` in .npmrc)")
}

/// The body for every `/-/npm/v1/security/…` request (`npm audit`, and the
/// audit that `npm install` runs), answered with
/// [`AUDIT_NOT_SUPPORTED_STATUS`]. `npm install` goes on quietly; `npm
/// audit` prints this message and fails.
pub fn audit_not_supported_body() -> String {
    crate::error_body("npm audit is not supported by this hoard registry: it has no advisory database (run npm install with --no-audit to skip the check)")
}

/// `{"ok": true}`: the body of a successful write (publish, dist-tag,
/// deprecate), which npm does not read further.
pub fn ok_body() -> String {
    json!({ "ok": true }).to_string()
}
