//! What [`complete`] adds to utoipa's document: the answers every operation gives
//! around its handler, and the shapes utoipa's annotations cannot express.

use serde_json::{json, Map, Value};

const ERROR_BODY: &str = "#/components/schemas/ErrorBody";

/// What a context name may be (the store refuses others with 400).
const CONTEXT_NAME: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": ERROR_BODY}}}
    })
}

fn ensure(responses: &mut Map<String, Value>, status: &str, description: &str) {
    responses
        .entry(status)
        .or_insert_with(|| error_response(description));
}

/// Adds to every operation the answers the server gives around its handler:
///
/// * 401 on every authenticated operation (the token check comes first), 403 on every
///   authenticated write (viewer tokens only read);
/// * 400 (path, query or body the server cannot read) and 503 (the store failed) on
///   every `/v1` operation; 408 and 413 on those that take a body (the body reader);
/// * 406 on those whose answer is negotiated, and their answers in YAML as well as
///   JSON (errors are always JSON);
/// * an error status that also carries a typed answer (push's 403 and 409) may carry
///   an `ErrorBody` instead (a token acting for another agent, a context that exists);
/// * the context-name pattern on `{ctx}` and the two values of `format`;
/// * a pull's 200 is a full answer or, with `since`, a delta;
/// * the metrics' `[path, count]` pairs.
pub fn complete(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let api = path.starts_with("/v1/");
        for method in METHODS {
            if let Some(operation) = item.get_mut(method) {
                complete_operation(operation, api, method != "get");
            }
        }
    }
    let hottest = "/components/schemas/Metrics/properties/hottest_conflict_paths";
    if let Some(schema) = doc.pointer_mut(hottest) {
        *schema = json!({
            "type": "array",
            "description": "`[path, count]` pairs, most conflicted first",
            "items": {
                "type": "array",
                "prefixItems": [{"type": "string"}, {"type": "integer", "minimum": 0}],
                "items": false,
                "minItems": 2,
                "maxItems": 2
            }
        });
    }
    let pull = "/paths/~1v1~1contexts~1{ctx}/get/responses/200/content";
    if let Some(content) = doc.pointer_mut(pull).and_then(Value::as_object_mut) {
        let either = json!({"oneOf": [
            {"$ref": "#/components/schemas/PullFull"},
            {"$ref": "#/components/schemas/PullDelta"},
        ]});
        for media in content.values_mut() {
            media["schema"] = either.clone();
        }
    }
}

fn is_success(status: &str) -> bool {
    status.starts_with('2')
}

fn json_schema(response: &Value) -> Option<&Value> {
    response.pointer("/content/application~1json/schema")
}

fn complete_operation(operation: &mut Value, api: bool, writes: bool) {
    let secured = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let has_body = operation.get("requestBody").is_some();
    if let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        for parameter in parameters {
            let name = parameter.get("name").and_then(Value::as_str);
            let place = parameter.get("in").and_then(Value::as_str);
            match (name, place) {
                (Some("ctx"), Some("path")) => {
                    parameter["schema"] = json!({"type": "string", "pattern": CONTEXT_NAME});
                }
                (Some("format"), Some("query")) => {
                    parameter["schema"] = json!({"type": "string", "enum": ["json", "yaml"]});
                }
                _ => {}
            }
        }
    }
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    // An answer in JSON from a `/v1` handler goes through the negotiation.
    let negotiated = api
        && responses
            .iter()
            .any(|(status, r)| is_success(status) && json_schema(r).is_some());
    if secured {
        ensure(
            responses,
            "401",
            "Missing, malformed, unknown or revoked token",
        );
    }
    if secured && writes {
        ensure(
            responses,
            "403",
            "The token may not do this (a viewer's read-only token, or another agent's)",
        );
    }
    if api {
        ensure(
            responses,
            "400",
            "A path parameter, query or body the server cannot read",
        );
        ensure(
            responses,
            "503",
            "The store failed or the server is shutting down; nothing applied",
        );
    }
    if has_body {
        ensure(
            responses,
            "408",
            "The body did not arrive in time; nothing applied",
        );
        ensure(responses, "413", "The body is over the limit");
    }
    if negotiated {
        ensure(
            responses,
            "406",
            "The Accept header accepts neither application/json nor application/yaml",
        );
    }
    for (status, response) in responses.iter_mut() {
        let Some(schema) = json_schema(response).cloned() else {
            continue;
        };
        let typed = schema.get("$ref").and_then(Value::as_str) != Some(ERROR_BODY);
        if negotiated && (is_success(status) || typed) {
            response["content"]["application/yaml"] = json!({"schema": schema.clone()});
        }
        if !is_success(status) && typed {
            response["content"]["application/json"]["schema"] =
                json!({"oneOf": [schema, {"$ref": ERROR_BODY}]});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::document;

    /// Every operation of the served document, as (path, method, operation).
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    out.push((path.clone(), method.to_owned(), op.clone()));
                }
            }
        }
        out
    }

    fn refs(schema: &Value) -> Vec<String> {
        match schema.get("oneOf") {
            Some(Value::Array(options)) => options.iter().flat_map(refs).collect(),
            _ => schema
                .get("$ref")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn every_authenticated_operation_documents_401_as_an_error_body() {
        let doc = document();
        let mut secured = 0;
        for (path, method, op) in operations(&doc) {
            if op["security"].as_array().is_none_or(|s| s.is_empty()) {
                assert!(!path.starts_with("/v1/"), "{method} {path} has no security");
                continue;
            }
            secured += 1;
            let schema = json_schema(&op["responses"]["401"]).cloned();
            assert_eq!(
                schema.as_ref().map(refs),
                Some(vec![ERROR_BODY.to_owned()]),
                "{method} {path}"
            );
        }
        assert!(secured >= 15, "{secured}");
    }

    #[test]
    fn error_statuses_admit_the_error_body_and_every_ref_resolves() {
        let doc = document();
        for (path, method, op) in operations(&doc) {
            for (status, response) in op["responses"].as_object().unwrap() {
                for (media, content) in response["content"].as_object().into_iter().flatten() {
                    let named = refs(&content["schema"]);
                    for r in &named {
                        let name = r.trim_start_matches("#/components/schemas/");
                        assert!(
                            doc["components"]["schemas"].get(name).is_some(),
                            "{method} {path} {status}: {r} is not in the components"
                        );
                    }
                    if !is_success(status) && media == "application/json" {
                        assert!(
                            named.iter().any(|r| r == ERROR_BODY),
                            "{method} {path} {status} does not admit ErrorBody: {named:?}"
                        );
                    }
                }
            }
        }
        // The push's 403 is an ErrorBody (token for another agent) or a PushResponse
        // (every change not_owner).
        let push_403 = &doc["paths"]["/v1/contexts/{ctx}/push"]["post"]["responses"]["403"];
        let mut named = refs(json_schema(push_403).unwrap());
        named.sort();
        assert_eq!(
            named,
            [ERROR_BODY, "#/components/schemas/PushResponse"].map(str::to_owned)
        );
        // A pull answers a full document or a delta.
        let pull_200 = &doc["paths"]["/v1/contexts/{ctx}"]["get"]["responses"]["200"];
        assert_eq!(
            refs(json_schema(pull_200).unwrap()),
            [
                "#/components/schemas/PullFull",
                "#/components/schemas/PullDelta"
            ]
            .map(str::to_owned)
        );
    }

    #[test]
    fn negotiated_answers_are_documented_in_both_formats_with_406() {
        let doc = document();
        let pull = &doc["paths"]["/v1/contexts/{ctx}"]["get"]["responses"];
        assert!(pull["200"]["content"]["application/yaml"].is_object());
        assert!(pull["406"].is_object());
        // Errors stay JSON only.
        assert!(pull["404"]["content"]["application/yaml"].is_null());
        // The event stream is not negotiated.
        let events = &doc["paths"]["/v1/contexts/{ctx}/events"]["get"]["responses"];
        assert!(events["406"].is_null());
        // Bodies can time out or be too large.
        let push = &doc["paths"]["/v1/contexts/{ctx}/push"]["post"]["responses"];
        assert!(push["408"].is_object() && push["413"].is_object());
    }

    #[test]
    fn metrics_pairs_are_a_string_and_a_count() {
        let doc = document();
        let items = &doc["components"]["schemas"]["Metrics"]["properties"]
            ["hottest_conflict_paths"]["items"];
        assert_eq!(items["prefixItems"][0]["type"], "string");
        assert_eq!(items["prefixItems"][1]["type"], "integer");
        assert_eq!(items["items"], false);
    }
}
