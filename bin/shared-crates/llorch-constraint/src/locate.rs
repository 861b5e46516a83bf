//! Finding where in a JSON schema a compile error points. llguidance's messages name the
//! offending keyword or value (`Unimplemented keys: ["foo"]`, `Invalid type: strng`,
//! `Expected f64 for 'minimum', got "x"`) but not its place; this finds the first place in the
//! schema (depth first, in document order) that holds such a key or value, as a JSON pointer.

use serde_json::Value;

/// A JSON pointer (`/properties/age/minimum`) to the first key or string value of `schema` that
/// the error `message` names, if any.
pub fn pointer(schema: &Value, message: &str) -> Option<String> {
    let names = candidates(message);
    names.iter().find_map(|name| {
        let mut path = Vec::new();
        find(schema, name, &mut path).then(|| {
            path.iter()
                .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
                .collect()
        })
    })
}

/// Words a message quotes (`"x"`, `'x'`, `` `x` ``), then the word after the last `: `.
fn candidates(message: &str) -> Vec<String> {
    let mut out = Vec::new();
    for q in ['"', '\'', '`'] {
        let parts: Vec<&str> = message.split(q).collect();
        for (i, p) in parts.iter().enumerate() {
            if i % 2 == 1 && i + 1 < parts.len() && !p.is_empty() && p.len() < 128 {
                out.push((*p).to_string());
            }
        }
    }
    if let Some((_, tail)) = message.rsplit_once(": ") {
        let w = tail
            .trim()
            .trim_matches(|c: char| !c.is_alphanumeric() && c != '_' && c != '$');
        if !w.is_empty() && !w.contains(' ') {
            out.push(w.to_string());
        }
    }
    out
}

/// Depth-first search for a key named `name` (the path ends at that key) or a string equal to
/// `name` (the path ends at that value).
fn find(v: &Value, name: &str, path: &mut Vec<String>) -> bool {
    match v {
        Value::Object(o) => {
            if o.contains_key(name) {
                path.push(name.to_string());
                return true;
            }
            for (k, child) in o {
                path.push(k.clone());
                if find(child, name, path) {
                    return true;
                }
                path.pop();
            }
            false
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                path.push(i.to_string());
                if find(child, name, path) {
                    return true;
                }
                path.pop();
            }
            false
        }
        Value::String(s) => s == name,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_keys_and_values() {
        let s = json!({"type":"object","properties":{"a":{"type":"strng"},"b":{"foo":1}}});
        assert_eq!(
            pointer(&s, "Invalid type: strng").as_deref(),
            Some("/properties/a/type")
        );
        assert_eq!(
            pointer(&s, r#"Unimplemented keys: ["foo"]"#).as_deref(),
            Some("/properties/b/foo")
        );
        assert_eq!(pointer(&s, "something else entirely"), None);
    }
}
