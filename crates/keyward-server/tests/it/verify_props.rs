//! Property test (acceptance 6): whatever arrives at `/v1/verify` (any string, a near miss of a
//! real token, any JSON in any field) the answer is never a 5xx and always JSON; a string that is
//! not a well-formed token is `malformed`, decided before any lookup.

use crate::helpers::{TestApp, spawn_app};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{Map, Value, json};

const CASES: u32 = 300;

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Posts `body`, checks the universal promises, and returns the status and JSON.
async fn post_verify(app: &TestApp, body: &Value) -> Result<(u16, Value), TestCaseError> {
    let r = app
        .request(Method::POST, "/v1/verify", None, Some(body))
        .await;
    let status = r.status.as_u16();
    prop_assert!(status < 500, "5xx for {body}: {}", r.text);
    let json: Value = serde_json::from_str(&r.text)
        .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {}", r.text)))?;
    if status == 200 {
        prop_assert!(json["active"].is_boolean(), "{json}");
    } else {
        prop_assert!((400..500).contains(&status));
        prop_assert!(
            json["error"]["code"].is_string() && json["error"]["message"].is_string(),
            "{json}"
        );
    }
    Ok((status, json))
}

/// A string that is not a token, on the wire and in the core parser alike.
async fn assert_malformed(app: &TestApp, s: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        keyward_core::format::validate(s).is_err(),
        "the parser accepted {s:?}"
    );
    let (status, json) = post_verify(app, &json!({"token": s})).await?;
    prop_assert_eq!(status, 200);
    prop_assert_eq!(
        json,
        json!({"active": false, "reason": "malformed"}),
        "for {:?}",
        s
    );
    Ok(())
}

#[test]
fn arbitrary_strings_are_malformed() {
    let rt = rt();
    let app = rt.block_on(spawn_app());
    let strings = prop_oneof![
        any::<String>(),
        "\\PC{0,80}",
        "[a-z]{2,4}_[0-9A-Za-z]{40,52}",
        "kwp_[0-9A-Za-z]{49}",
        ".{0,300}",
    ];
    runner()
        .run(&strings, |s| rt.block_on(assert_malformed(&app, &s)))
        .unwrap();
}

#[derive(Debug, Clone)]
enum NearMiss {
    Change(usize, char),
    Truncate(usize),
    Extend(String),
    Insert(usize, char),
    Remove(usize),
}

fn apply(token: &str, miss: &NearMiss) -> Option<String> {
    let chars: Vec<char> = token.chars().collect();
    let n = chars.len();
    let out: String = match miss {
        NearMiss::Change(i, c) => {
            let i = i % n;
            if chars[i] == *c {
                return None;
            }
            chars
                .iter()
                .enumerate()
                .map(|(j, &x)| if j == i { *c } else { x })
                .collect()
        }
        NearMiss::Truncate(i) => chars[..i % n].iter().collect(),
        NearMiss::Extend(tail) => format!("{token}{tail}"),
        NearMiss::Insert(i, c) => {
            let i = i % (n + 1);
            chars[..i]
                .iter()
                .chain(std::iter::once(c))
                .chain(chars[i..].iter())
                .collect()
        }
        NearMiss::Remove(i) => {
            let i = i % n;
            chars
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &x)| x)
                .collect()
        }
    };
    Some(out)
}

fn near_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::ranges(vec!['0'..='9', 'A'..='Z', 'a'..='z'].into()),
        1 => Just('_'),
        1 => any::<char>(),
    ]
}

#[test]
fn near_misses_of_a_real_token_are_malformed_and_the_real_one_is_active() {
    let rt = rt();
    let app = rt.block_on(spawn_app());
    let token = rt.block_on(async {
        let alice = app.user("alice").await;
        app.token(&alice, &["droplet:read"]).await.secret
    });
    let misses = prop_oneof![
        (any::<usize>(), near_char()).prop_map(|(i, c)| NearMiss::Change(i, c)),
        any::<usize>().prop_map(NearMiss::Truncate),
        "[0-9A-Za-z_ ]{1,8}|\\PC{1,4}".prop_map(NearMiss::Extend),
        (any::<usize>(), near_char()).prop_map(|(i, c)| NearMiss::Insert(i, c)),
        any::<usize>().prop_map(NearMiss::Remove),
    ];
    runner()
        .run(&misses, |miss| {
            let Some(s) = apply(&token, &miss) else {
                return Ok(());
            };
            rt.block_on(assert_malformed(&app, &s))
        })
        .unwrap();
    // Every single-character substitution, exhaustively over the base62 alphabet and `_`.
    rt.block_on(async {
        let alphabet: Vec<char> = ('0'..='9')
            .chain('A'..='Z')
            .chain('a'..='z')
            .chain(['_'])
            .collect();
        for i in 0..token.len() {
            for &c in &alphabet {
                if let Some(s) = apply(&token, &NearMiss::Change(i, c)) {
                    assert!(keyward_core::format::validate(&s).is_err(), "{s}");
                }
            }
        }
        let v = app.verify(&token, &["droplet:read"]).await;
        assert_eq!(v["active"], true, "{v}");
    });
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        "(droplet|volume|tokens|\\*):(read|\\*|x)".prop_map(Value::String),
        "([0-9]{1,3}\\.){3}[0-9]{1,3}|[0-9a-f:]{2,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{0,6}|\\PC{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

#[test]
fn random_json_in_every_field_is_never_a_5xx() {
    let rt = rt();
    let app = rt.block_on(spawn_app());
    let token = rt.block_on(async {
        let alice = app.user("alice").await;
        app.token(&alice, &["droplet:read"]).await.secret
    });
    let fields = (
        prop::option::of(prop_oneof![
            json_value(),
            Just(Value::String(token.clone()))
        ]),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(("[a-z_]{1,8}", json_value())),
    );
    runner()
        .run(&fields, |(token_field, scopes, ip, extra)| {
            let mut body = Map::new();
            if let Some(v) = token_field.clone() {
                body.insert("token".into(), v);
            }
            if let Some(v) = scopes.clone() {
                body.insert("scopes".into(), v);
            }
            if let Some(v) = ip.clone() {
                body.insert("ip".into(), v);
            }
            if let Some((k, v)) = extra.clone() {
                body.insert(k, v);
            }
            let body = Value::Object(body);
            rt.block_on(async {
                let (status, json) = post_verify(&app, &body).await?;
                // A string token with nothing else wrong in the body gets a 200 verdict.
                let plain = extra.is_none()
                    && scopes
                        .as_ref()
                        .is_none_or(|s| s.as_array().is_some_and(|a| a.is_empty()))
                    && ip.is_none();
                if let (true, Some(Value::String(t))) = (plain, &token_field) {
                    prop_assert_eq!(status, 200, "{}", body);
                    if t != &token {
                        prop_assert_eq!(json, json!({"active": false, "reason": "malformed"}));
                    } else {
                        prop_assert_eq!(&json["active"], &json!(true));
                    }
                }
                if token_field.is_none() {
                    prop_assert_eq!(status, 400, "a body without a token is refused: {}", body);
                }
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn random_bytes_as_a_body_are_never_a_5xx() {
    let rt = rt();
    let app = rt.block_on(spawn_app());
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        "\\PC{0,100}".prop_map(String::into_bytes),
        "\\{\"token\": ?\\PC{0,40}".prop_map(String::into_bytes),
    ];
    runner()
        .run(&bodies, |bytes| {
            rt.block_on(async {
                let r = app
                    .raw(
                        Method::POST,
                        "/v1/verify",
                        &[("content-type", "application/json")],
                        bytes.clone(),
                    )
                    .await;
                prop_assert!(r.status.as_u16() < 500, "{} for {:?}", r.text, bytes);
                prop_assert!(
                    serde_json::from_str::<Value>(&r.text).is_ok(),
                    "not JSON: {}",
                    r.text
                );
                Ok(())
            })
        })
        .unwrap();
}
