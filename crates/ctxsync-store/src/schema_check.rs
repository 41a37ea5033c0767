//! The optional JSON Schema (2020-12 by default, or the draft its `$schema` names) that
//! every new revision of every context must satisfy (`schema = "…"` in ctxsync.toml,
//! DESIGN §2): a push whose result breaks it is refused with the instance path and the
//! rule, nothing applied. Both backends check through here, so they refuse alike.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::error::StoreError;

/// A compiled schema, cheap to clone.
#[derive(Clone)]
pub struct ContextSchema {
    validator: Arc<jsonschema::Validator>,
    /// Where it came from, for messages.
    pub source: String,
}

impl fmt::Debug for ContextSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextSchema")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ContextSchema {
    /// Compiles `schema` (a JSON Schema document). Remote `$ref`s are not fetched: a
    /// store must not depend on the network to accept a push.
    pub fn compile(schema: &Value, source: impl Into<String>) -> Result<Self, StoreError> {
        let source = source.into();
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(schema)
            .map_err(|e| StoreError::Invalid(format!("schema {source}: {e}")))?;
        Ok(Self {
            validator: Arc::new(validator),
            source,
        })
    }

    /// `SchemaViolation` for the first rule `doc` breaks.
    pub fn check(&self, doc: &Value) -> Result<(), StoreError> {
        match self.validator.iter_errors(doc).next() {
            None => Ok(()),
            Some(error) => Err(StoreError::SchemaViolation {
                instance_path: error.instance_path().to_string(),
                rule: error.to_string(),
                schema_path: error.schema_path().to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_instance_path_and_the_rule() {
        let schema = ContextSchema::compile(
            &json!({"type": "object", "properties": {"phase": {"enum": ["plan", "build"]}}}),
            "test",
        )
        .unwrap();
        assert!(schema.check(&json!({"phase": "plan"})).is_ok());
        let e = schema.check(&json!({"phase": "ship"})).unwrap_err();
        match e {
            StoreError::SchemaViolation {
                instance_path,
                schema_path,
                ..
            } => {
                assert_eq!(instance_path, "/phase");
                assert!(schema_path.contains("enum"), "{schema_path}");
            }
            other => panic!("{other}"),
        }
        assert!(ContextSchema::compile(&json!({"type": 5}), "bad").is_err());
    }
}
