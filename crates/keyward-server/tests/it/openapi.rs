//! `/openapi.json`: generated from the code, OpenAPI 3.1, and describing every API route.

use crate::helpers::spawn_app;
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeSet;

/// Every route of the JSON API and the standard interfaces, as `app()` serves them (the web
/// pages are HTML for people and are not in the document).
const API_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/tokens"),
    ("get", "/v1/tokens"),
    ("get", "/v1/tokens/self"),
    ("post", "/v1/tokens/self/regenerate"),
    ("get", "/v1/tokens/{id}"),
    ("patch", "/v1/tokens/{id}"),
    ("delete", "/v1/tokens/{id}"),
    ("post", "/v1/tokens/{id}/regenerate"),
    ("post", "/v1/users"),
    ("get", "/v1/users"),
    ("get", "/v1/users/{id}"),
    ("patch", "/v1/users/{id}"),
    ("delete", "/v1/users/{id}"),
    ("post", "/v1/users/{id}/tokens"),
    ("post", "/v1/verify"),
    ("get", "/v1/audit"),
    ("get", "/v1/events"),
    ("get", "/v1/webhooks/deliveries"),
    ("get", "/v1/auth"),
    ("post", "/v1/auth"),
    ("put", "/v1/auth"),
    ("patch", "/v1/auth"),
    ("delete", "/v1/auth"),
    ("head", "/v1/auth"),
    ("options", "/v1/auth"),
    ("trace", "/v1/auth"),
    ("post", "/oauth/introspect"),
    ("post", "/oauth/revoke"),
    ("post", "/v1/tokens/revoke"),
    ("post", "/v1/leaks"),
    ("post", "/v1/leaks/github"),
    ("get", "/v1/revocable_token_types"),
    ("post", "/v1/revoke_tokens"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

#[tokio::test]
async fn the_served_document_is_openapi_3_1_and_lists_every_route() {
    let app = spawn_app().await;
    let r = app.request(Method::GET, "/openapi.json", None, None).await;
    let doc = r.expect(200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| {
                    [
                        "get", "post", "put", "patch", "delete", "head", "options", "trace",
                    ]
                    .contains(&k.as_str())
                })
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = API_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, expected);

    // Every documented route is served: neither the 404 fallback nor 405.
    for (method, path) in API_ROUTES {
        let path = path.replace("{id}", "tok_01JZZZZZZZZZZZZZZZZZZZZZZZ");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = app.request(method.clone(), &path, None, None).await;
        assert_ne!(r.status.as_u16(), 405, "{method} {path}");
        // GitHub's and GitLab's endpoints answer 404 until `[leaks.*]` turns them on.
        let partner = [
            "/v1/leaks/github",
            "/v1/revocable_token_types",
            "/v1/revoke_tokens",
        ];
        if r.status.as_u16() == 404 {
            assert!(
                path.contains("tok_") || partner.contains(&path.as_str()),
                "{method} {path} is not routed"
            );
        }
    }

    // Each operation describes its answers and has an id of its own, and every $ref resolves.
    let mut ids = BTreeSet::new();
    for (_, item) in doc["paths"].as_object().unwrap() {
        for (_, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{op}"
            );
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        }
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}"));
        assert!(schemas.contains_key(name), "dangling {r}");
    }
    for name in [
        "ErrorResponse",
        "OAuthError",
        "VerifyAnswer",
        "IntrospectionAnswer",
        "Token",
    ] {
        assert!(schemas.contains_key(name), "{name}");
    }
    let secured = doc["components"]["securitySchemes"].as_object().unwrap();
    assert!(secured.contains_key("bearer") && secured.contains_key("basic"));
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap().to_owned());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
