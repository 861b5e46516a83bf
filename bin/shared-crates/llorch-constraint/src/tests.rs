use super::*;
use serde_json::json;

/// A vocabulary of the 256 bytes, a few two-byte words and one special end token (id 260).
fn vocab() -> Compiler {
    let mut toks: Vec<(Vec<u8>, bool)> = (0..=255u8).map(|b| (vec![b], false)).collect();
    for w in ["{\"", "\": ", "ab", "12"] {
        toks.push((w.as_bytes().to_vec(), false));
    }
    toks.push((b"<|end|>".to_vec(), true));
    Compiler::new(&toks, &[260]).unwrap()
}

/// Decode under `guide`, each step taking the allowed token the scorer likes best.
fn run(guide: &mut Guide, c: &Compiler, score: impl Fn(usize, u32) -> f32) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    for step in 0..200 {
        let mut logits: Vec<f32> = (0..c.vocab_size() as u32).map(|t| score(step, t)).collect();
        guide.mask(&mut logits).unwrap();
        let (id, _) = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap();
        let id = id as u32;
        if id == 260 {
            return (out, true);
        }
        guide.commit(id).unwrap();
        if id < 256 {
            out.push(id as u8);
        } else {
            out.extend_from_slice([b"{\"", b"\": ".as_slice(), b"ab", b"12"][id as usize - 256]);
        }
    }
    (out, false)
}

#[test]
fn regex_output_matches_and_ends_only_when_complete() {
    let c = vocab();
    let mut g = c.compile(&Constraint::Regex("[0-9]{3}-x".into())).unwrap();
    // The scorer prefers the end token, then letters: the mask must force three digits and "-x".
    let (out, ended) = run(&mut g, &c, |_, t| match t {
        260 => 10.0,
        t if t < 256 && (t as u8).is_ascii_alphabetic() => 5.0,
        _ => 0.0,
    });
    assert!(ended);
    let s = String::from_utf8(out).unwrap();
    assert_eq!(s.len(), 5, "{s}");
    assert!(
        s[..3].bytes().all(|b| b.is_ascii_digit()) && s.ends_with("-x"),
        "{s}"
    );
}

#[test]
fn json_schema_output_is_valid() {
    let c = vocab();
    let schema = json!({
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99},
                       "tag": {"enum": ["ab", "cd"]}},
        "required": ["n", "tag"],
        "additionalProperties": false
    });
    let mut g = c.compile(&Constraint::JsonSchema(schema)).unwrap();
    // A scorer that likes digits and spaces: the mask keeps it inside the schema.
    let (out, ended) = run(&mut g, &c, |step, t| match t {
        260 => 1.0,
        t if t < 256 && (t as u8).is_ascii_digit() => 3.0 + (step % 3) as f32,
        32 => 4.0,
        _ => (t % 7) as f32 * 0.1,
    });
    assert!(ended);
    let v: Value = serde_json::from_slice(&out).unwrap();
    let n = v["n"].as_i64().unwrap();
    assert!((0..=99).contains(&n), "{v}");
    assert!(["ab", "cd"].contains(&v["tag"].as_str().unwrap()), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 2);
}

#[test]
fn json_object_is_any_object() {
    let c = vocab();
    let mut g = c.compile(&Constraint::JsonObject(true)).unwrap();
    let (out, ended) = run(&mut g, &c, |step, t| match t {
        260 => 9.0,
        125 => 8.0, // `}`
        34 => 7.0,  // `"`
        t => ((t as usize + step) % 5) as f32,
    });
    assert!(ended);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert!(v.is_object(), "{v}");
}

#[test]
fn lark_grammar() {
    let c = vocab();
    let g = "start: \"yes\" | \"no\"";
    let mut g = c.compile(&Constraint::Lark(g.into())).unwrap();
    let (out, ended) = run(&mut g, &c, |_, t| if t == b'n' as u32 { 5.0 } else { 0.0 });
    assert!(ended);
    assert_eq!(out, b"no");
}

#[test]
fn bad_constraints_name_where_and_why() {
    let e = check(&Constraint::JsonSchema(json!({
        "type": "object",
        "properties": {"a": {"type": "strng"}}
    })))
    .unwrap_err();
    assert_eq!(e.field, "constraint.json_schema#/properties/a/type", "{e}");
    assert!(e.message.contains("strng"), "{e}");
    let e = check(&Constraint::JsonSchema(json!({
        "type": "object",
        "properties": {"a": {"type": "array", "uniqueItems": true}}
    })))
    .unwrap_err();
    assert_eq!(
        e.field, "constraint.json_schema#/properties/a/uniqueItems",
        "{e}"
    );
    let e = check(&Constraint::Regex("(unclosed".into())).unwrap_err();
    assert_eq!(e.field, "constraint.regex");
    let e = check(&Constraint::Lark("start: undefined_rule".into())).unwrap_err();
    assert_eq!(e.field, "constraint.lark");
    assert!(e.message.contains("undefined_rule"), "{e}");
    assert_eq!(
        e.clone()
            .renamed("response_format.json_schema.schema")
            .field,
        "response_format.json_schema.schema"
    );
    check(&Constraint::JsonObject(true)).unwrap();
    check(&Constraint::Regex("[a-z]+".into())).unwrap();
}

#[test]
fn json_or_text_takes_either_branch() {
    let c = vocab();
    let schema = json!({"type": "array", "items": {"type": "object",
        "properties": {"name": {"const": "f"}}, "required": ["name"],
        "additionalProperties": false}, "minItems": 1, "maxItems": 1});
    let g = json_or_text(&schema);
    check(&g).unwrap();
    let mut guide = c.compile(&g).unwrap();
    // Prefers `[`: must finish a valid call.
    let (out, ended) = run(&mut guide, &c, |_, t| match t {
        91 => 9.0,
        260 => 5.0,
        t => (t % 13) as f32 * 0.1,
    });
    assert!(ended);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v, json!([{"name": "f"}]));
    // Prefers letters then the end: plain text.
    let mut guide = c.compile(&g).unwrap();
    let (out, ended) = run(&mut guide, &c, |step, t| match t {
        104 if step == 0 => 9.0,
        105 if step == 1 => 9.0,
        260 if step >= 2 => 9.0,
        _ => 0.0,
    });
    assert!(ended);
    assert_eq!(out, b"hi");
}
