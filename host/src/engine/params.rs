//! Run parameters: built from `--param k=v` pairs and a params file, typed
//! by the workflow's JSON Schema, validated with precise messages before any
//! guest code runs.

use serde_json::{Map, Value};

/// Validates `params` of `workflow`, with every problem in one error.
pub fn check(
    validator: &jsonschema::Validator,
    workflow: &str,
    params: &Value,
) -> Result<(), super::StartError> {
    validate(validator, params).map_err(|errors| super::StartError::InvalidParams {
        workflow: workflow.to_string(),
        errors,
    })
}

/// Largest parameters document accepted, in bytes.
pub const MAX_PARAMS_BYTES: usize = 1 << 20;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// Builds the parameters object: `file` (a JSON object) first, then each
/// `key=value` pair. A value is taken as a string when the schema says the
/// property is a string, and parsed as JSON otherwise.
pub fn build(file: Option<Value>, pairs: &[String], schema: &Value) -> Result<Value, String> {
    let mut params = match file {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err("the params file must contain a JSON object".into()),
    };
    for pair in pairs {
        let Some((key, raw)) = pair.split_once('=') else {
            return Err(format!("`--param {pair}` is not of the form key=value"));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("`--param {pair}` has an empty key"));
        }
        let declared = schema
            .pointer(&format!("/properties/{}/type", escape_pointer(key)))
            .cloned();
        let wants_string = match &declared {
            Some(Value::String(t)) => t == "string",
            // `string|null`: a string, unless the value is literally `null`.
            Some(Value::Array(ts)) => ts.iter().any(|t| t == "string") && raw != "null",
            _ => false,
        };
        let value = if wants_string {
            Value::String(raw.to_string())
        } else {
            match serde_json::from_str::<Value>(raw) {
                Ok(v) => v,
                // Unknown or untyped property: a bare word is a string.
                Err(_) if declared.is_none() => Value::String(raw.to_string()),
                Err(e) => {
                    return Err(format!(
                        "`--param {key}={raw}`: the schema expects {}, and `{raw}` is not valid JSON ({e})",
                        declared.map(|d| d.to_string()).unwrap_or_default()
                    ));
                }
            }
        };
        params.insert(key.to_string(), value);
    }
    Ok(Value::Object(params))
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Validates `params` against the compiled schema; each error names the
/// offending parameter and what was expected.
pub fn validate(validator: &jsonschema::Validator, params: &Value) -> Result<(), Vec<String>> {
    let size = serde_json::to_vec(params)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_PARAMS_BYTES {
        return Err(vec![format!(
            "parameters are {size} bytes; the limit is {MAX_PARAMS_BYTES}: pass large inputs as files in the target"
        )]);
    }
    if depth(params) > MAX_DEPTH {
        return Err(vec![format!(
            "parameters are nested deeper than {MAX_DEPTH} levels"
        )]);
    }
    let errors: Vec<String> = validator
        .iter_errors(params)
        .map(|e| {
            let at = e.instance_path.to_string();
            if at.is_empty() {
                format!("parameters: {e}")
            } else {
                format!("parameter `{}`: {e}", at.trim_start_matches('/'))
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn depth(v: &Value) -> usize {
    // Iterative, so a hostile document cannot overflow the host's stack.
    let mut max = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        max = max.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(m) => stack.extend(m.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "name": {"type": "string"},
            "jobs": {"type": "integer", "minimum": 1},
            "deep": {"type": "boolean"}
        }, "additionalProperties": false})
    }

    #[test]
    fn pairs_are_typed_by_the_schema() {
        let p = build(
            None,
            &["name=42".into(), "jobs=3".into(), "deep=true".into()],
            &schema(),
        )
        .unwrap();
        assert_eq!(p, json!({"name": "42", "jobs": 3, "deep": true}));
        let err = build(None, &["jobs=three".into()], &schema()).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        assert!(build(None, &["novalue".into()], &schema()).is_err());
        let p = build(Some(json!({"jobs": 1})), &["jobs=2".into()], &schema()).unwrap();
        assert_eq!(p["jobs"], 2);
        let opt = json!({"properties": {"pkg": {"type": ["string", "null"]}}});
        assert_eq!(
            build(None, &["pkg=123".into()], &opt).unwrap()["pkg"],
            "123"
        );
        assert_eq!(
            build(None, &["pkg=null".into()], &opt).unwrap()["pkg"],
            Value::Null
        );
    }

    #[test]
    fn validation_names_the_parameter() {
        let v = jsonschema::validator_for(&schema()).unwrap();
        let errs = validate(&v, &json!({"jobs": 0, "extra": 1})).unwrap_err();
        assert!(
            errs.iter().any(|e| e.starts_with("parameter `jobs`")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.contains("extra")), "{errs:?}");
        assert!(validate(&v, &json!({"jobs": 2})).is_ok());
    }

    #[test]
    fn hostile_documents_are_refused() {
        let v = jsonschema::validator_for(&json!({})).unwrap();
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!([deep]);
        }
        assert!(validate(&v, &json!({"d": deep})).unwrap_err()[0].contains("nested"));
        let huge = json!({"s": "x".repeat(2 << 20)});
        assert!(validate(&v, &huge).unwrap_err()[0].contains("bytes"));
    }
}
