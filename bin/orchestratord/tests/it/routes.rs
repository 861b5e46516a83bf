//! The route contract: the router serves exactly `llorch_wire::routes::orchestrator` (each
//! route with its methods, 405 for the others), its source names API paths only through those
//! constants, and the OpenAPI document describes every one of them (and no other), with the
//! error-code enum of `ErrorCode::ALL`.

use llorch_wire::routes::orchestrator::ALL;

use crate::common::*;

/// The dashboard page's own routes: not API routes (the document may describe `/ui`).
const PAGE_ROUTES: &[&str] = &["/", "/ui/", "/ui", "/ui/{file}"];

#[tokio::test(flavor = "multi_thread")]
async fn router_wire_crate_and_openapi_agree() {
    let o = Orchd::start(&[]);
    let addr = format!("127.0.0.1:{}", o.port);
    let problems =
        tokio::task::spawn_blocking(move || llorch_testkit::routes::check_served(&addr, ALL, None))
            .await
            .unwrap();
    assert!(problems.is_empty(), "{problems:#?}");

    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let literals = llorch_testkit::routes::literal_routes(&src, PAGE_ROUTES);
    assert!(
        literals.is_empty(),
        "route paths must be llorch_wire::routes constants: {literals:#?}"
    );

    let (st, doc) = get_json(&o.url("/v2/openapi.json")).await;
    assert_eq!(st, 200);
    let paths = doc["paths"].as_object().expect("paths");
    // OpenAPI has no catch-all parameter: `{*id}` is written `{id}`.
    let documented = |t: &str| t.replace("{*", "{");
    for (template, methods) in ALL {
        let p = &paths
            .get(&documented(template))
            .unwrap_or_else(|| panic!("{template} is served but not in the OpenAPI document"));
        for m in *methods {
            assert!(
                p[m.to_lowercase()].is_object(),
                "{m} {template} is served but not in the OpenAPI document"
            );
        }
        let listed: Vec<&String> = p.as_object().unwrap().keys().collect();
        for k in listed {
            assert!(
                methods.iter().any(|m| m.eq_ignore_ascii_case(k)),
                "the OpenAPI document has {k} {template}, which is not served"
            );
        }
    }
    for p in paths.keys() {
        assert!(
            ALL.iter().any(|(t, _)| documented(t) == *p) || PAGE_ROUTES.contains(&p.as_str()),
            "the OpenAPI document has {p}, which is not a route"
        );
    }

    let codes: Vec<&str> = llorch_wire::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    let doc_codes: Vec<&str> = doc["components"]["schemas"]["ErrorEnvelope"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(doc_codes, codes);
}
