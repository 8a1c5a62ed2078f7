//! Search, login, whoami, audit.

use std::collections::BTreeMap;

use hoard_npm::*;
use serde_json::{json, Value};
use time::macros::datetime;

use crate::name;

#[test]
fn search_matching() {
    let kw = vec!["Hoard".to_owned(), "fixture".to_owned()];
    let n = name("hoard-demo");
    let s = name("@acme/widget");
    assert!(matches_search("hoard", &n, None, &[]));
    assert!(matches_search("HOARD demo", &n, None, &[]));
    assert!(matches_search("tiny", &n, Some("A tiny package"), &[]));
    assert!(matches_search("fixture", &n, None, &kw));
    assert!(matches_search("", &n, None, &[]));
    assert!(!matches_search("hoard nothing", &n, Some("x"), &kw));
    assert!(matches_search("keywords:fixture,zzz", &n, None, &kw));
    assert!(!matches_search("keywords:fix", &n, None, &kw));
    assert!(matches_search("scope:acme", &s, None, &[]));
    assert!(matches_search("@acme", &s, None, &[]));
    assert!(!matches_search("scope:acme", &n, None, &[]));
    assert!(matches_search("widget", &s, None, &[]));

    assert_eq!(search_score("hoard-demo", &n, None, &[]), 1.0);
    assert!(search_score("hoard", &n, None, &[]) > search_score("demo", &n, None, &[]));
    assert!(search_score("demo", &n, None, &[]) > search_score("tiny", &n, Some("tiny"), &[]));
    assert_eq!(search_score("zzz", &n, None, &[]), 0.0);
}

#[test]
fn search_query_parsing() {
    let q = parse_search_query(
        "text=hoard+demo&size=20&from=0&quality=0.65&popularity=0.98&maintenance=0.5",
    );
    assert_eq!(
        q,
        SearchQuery {
            text: "hoard demo".into(),
            size: 20,
            from: 0
        }
    );
    let q = parse_search_query("text=%40acme%2Fwidget&size=100000&from=x");
    assert_eq!(
        q,
        SearchQuery {
            text: "@acme/widget".into(),
            size: MAX_SEARCH_SIZE,
            from: 0
        }
    );
    assert_eq!(parse_search_query("").size, DEFAULT_SEARCH_SIZE);
    assert_eq!(parse_search_query("text=%ff").text, "\u{fffd}");
}

#[test]
fn search_response_shape() {
    let hits = vec![
        SearchHit {
            name: name("@acme/widget"),
            version: "1.0.0".into(),
            description: Some("A scoped fixture".into()),
            keywords: vec!["w".into()],
            date: datetime!(2026-01-02 03:04:05 UTC),
            publisher: Some("alice".into()),
            links: BTreeMap::from([(
                "npm".to_owned(),
                "http://127.0.0.1:4040/npm/@acme/widget".to_owned(),
            )]),
            score: 0.8,
        },
        SearchHit {
            name: name("hoard-demo"),
            version: "2.0.0".into(),
            description: None,
            keywords: vec![],
            date: datetime!(2026-01-02 03:04:05 UTC),
            publisher: None,
            links: BTreeMap::new(),
            score: f64::NAN,
        },
    ];
    let v = render_search(&hits, 7, datetime!(2026-11-21 23:35:00 UTC));
    assert_eq!(v["total"], 7);
    assert_eq!(v["time"], "Sat, 21 Nov 2026 23:35:00 GMT");
    let o = &v["objects"][0];
    assert_eq!(o["package"]["name"], "@acme/widget");
    assert_eq!(o["package"]["scope"], "acme");
    assert_eq!(o["package"]["version"], "1.0.0");
    assert_eq!(o["package"]["date"], "2026-01-02T03:04:05.000Z");
    assert_eq!(
        o["package"]["publisher"],
        json!({"username": "alice", "email": ""})
    );
    assert_eq!(
        o["package"]["maintainers"],
        json!([{"username": "alice", "email": ""}])
    );
    assert_eq!(
        o["package"]["links"]["npm"],
        "http://127.0.0.1:4040/npm/@acme/widget"
    );
    assert_eq!(o["score"]["final"], 0.8);
    assert_eq!(o["score"]["detail"]["quality"], 0.8);
    assert_eq!(o["searchScore"], 0.8);
    let u = &v["objects"][1];
    assert_eq!(u["package"]["scope"], "unscoped");
    assert_eq!(u["package"]["description"], "");
    assert_eq!(
        u["package"]["maintainers"],
        json!([]),
        "npm search needs the array"
    );
    assert!(u["package"].get("publisher").is_none());
    assert_eq!(u["score"]["final"], 0.0);
    assert_eq!(
        render_search(&[], 0, datetime!(2026-01-01 00:00 UTC))["objects"],
        json!([])
    );
}

#[test]
fn login_bodies() {
    let ok: Value = serde_json::from_str(&login_ok_body("alice", "tok")).unwrap();
    assert_eq!(ok["token"], "tok");
    assert_eq!(ok["ok"], true);
    assert_eq!(ok["id"], "org.couchdb.user:alice");
    let w: Value = serde_json::from_str(&whoami_body("alice")).unwrap();
    assert_eq!(w, json!({"username": "alice"}));
    for body in [web_login_not_supported_body(), audit_not_supported_body()] {
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("not supported"));
    }
    assert_eq!(WEB_LOGIN_FALLBACK_STATUS, 404);
    assert_eq!(ok_body(), "{\"ok\":true}");
}

#[test]
fn login_rejections() {
    let good = json!({"_id": "org.couchdb.user:alice", "name": "alice", "password": "p", "type": "user", "roles": [], "date": "2026-01-01T00:00:00.000Z"});
    assert!(parse_login(good.to_string().as_bytes(), "alice").is_ok());
    let cases = [
        ("name", json!("bob")),
        ("name", json!(1)),
        ("password", json!("")),
        ("password", json!(null)),
        ("type", json!("admin")),
        ("_id", json!("org.couchdb.user:bob")),
        ("email", json!(5)),
    ];
    for (field, value) in cases {
        let mut b = good.clone();
        b[field] = value.clone();
        assert!(
            matches!(
                parse_login(b.to_string().as_bytes(), "alice"),
                Err(NpmError::InvalidLogin(_))
            ),
            "{field}={value}"
        );
    }
    assert!(matches!(
        parse_login(b"{", "alice"),
        Err(NpmError::MalformedJson(_))
    ));
    assert!(matches!(
        parse_login(b"[]", "alice"),
        Err(NpmError::MalformedJson(_))
    ));
    for bad in ["", ".x", "a b", "a/b", &"a".repeat(101)] {
        assert!(validate_username(bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse_couch_user_segment("org.couchdb.user:alice").unwrap(),
        "alice"
    );
    assert_eq!(
        parse_couch_user_segment("org.couchdb.user%3Aa.b_c-d").unwrap(),
        "a.b_c-d"
    );
    assert!(parse_couch_user_segment("org.couchdb.user:..%2f").is_err());
    assert!(parse_couch_user_segment("alice").is_err());
}
