//! Answer-format negotiation over real HTTP (issue 10, item 9): `Accept` q-values are
//! honoured, `q=0` refuses a type, and a request that accepts neither JSON nor YAML is
//! a 406 in the JSON error shape that changes nothing.

mod common;

use common::*;
use serde_json::{json, Value};

fn pull_with(s: &Server, token: &str, query: &str, accept: &str) -> Resp {
    request(
        "GET",
        &s.url(&format!("/v1/contexts/ctx{query}")),
        Some(token),
        &[("Accept", accept)],
        None,
    )
}

fn is_yaml(r: &Resp) -> bool {
    r.header("content-type")
        .is_some_and(|ct| ct.starts_with("application/yaml"))
}

fn is_json(r: &Resp) -> bool {
    r.header("content-type")
        .is_some_and(|ct| ct.starts_with("application/json"))
}

#[test]
fn accept_q_values_pick_the_answer_format() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "ctx", seed_doc());
    let as_json = get(&s.url("/v1/contexts/ctx"), &t).json();

    for accept in [
        "application/yaml;q=0, application/json",
        "application/yaml;q=0, */*",
        "application/yaml;q=0.2, application/json;q=0.9",
        "*/*",
    ] {
        let r = pull_with(&s, &t, "", accept);
        assert_eq!(r.status, 200, "{accept}: {}", r.text());
        assert!(is_json(&r), "{accept}: {:?}", r.header("content-type"));
        assert_eq!(r.json(), as_json, "{accept}");
    }
    for accept in [
        "application/json;q=0.1, application/yaml;q=0.9",
        "application/json;q=0, */*",
        "text/*",
    ] {
        let r = pull_with(&s, &t, "", accept);
        assert_eq!(r.status, 200, "{accept}: {}", r.text());
        assert!(is_yaml(&r), "{accept}: {:?}", r.header("content-type"));
        let as_yaml: Value = serde_norway::from_slice(&r.body).unwrap();
        assert_eq!(as_yaml, as_json, "{accept}");
    }
    // `?format=` is explicit and wins over Accept.
    let r = pull_with(&s, &t, "?format=yaml", "application/yaml;q=0");
    assert_eq!(r.status, 200);
    assert!(is_yaml(&r));
}

#[test]
fn nothing_acceptable_is_a_406_in_json_that_changes_nothing() {
    let s = Server::start();
    let t = s.token("builder");
    s.create(&t, "ctx", seed_doc());
    for accept in ["application/yaml;q=0", "text/html", "*/*;q=0"] {
        let r = pull_with(&s, &t, "", accept);
        assert!(is_json(&r), "{accept}");
        r.assert_error(406, "not_acceptable");
    }
    let before = s.revision("ctx");
    let r = request(
        "POST",
        &s.url("/v1/contexts/ctx/push"),
        Some(&t),
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/yaml;q=0"),
        ],
        Some(
            json!({"agent": "builder", "changes": [{"path": "notes", "to": "x"}]})
                .to_string()
                .as_bytes(),
        ),
    );
    r.assert_error(406, "not_acceptable");
    assert_eq!(s.revision("ctx"), before);
}
