//! `--kernels generic` end to end: a real worker process running the GPU code path on the CPU
//! serves a completion over HTTP whose greedy tokens follow llama.cpp's fixture within the
//! fixture's rule (the tolerance `.specs/worker.md` states for the GPU path).

use super::*;

#[test]
fn a_generic_kernels_worker_serves_llama_cpp_tokens_over_http() {
    let test = "a_generic_kernels_worker_serves_llama_cpp_tokens_over_http";
    let Some(model) = llorch_testkit::require_smollm2(test) else {
        return;
    };
    let w = WorkerProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_llorch-candled")),
        &model,
        &["--kernels", "generic"],
    );
    // the worker says which path it loaded (its log; /health has no field for it)
    let log = std::fs::read_to_string(&w.log).unwrap();
    assert!(log.contains("kernels=generic"), "{}", w.log_tail());
    let (status, body) = llorch_testkit::http_get(&w.addr, "/health").unwrap();
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ready", "{body}");
    assert_eq!(
        health["runtime_quantization"], health["quantization"],
        "weights run as stored: {body}"
    );

    let fx = llorch_testkit::smollm2_fixture();
    let case = &fx["cases"][1]; // chat-ocean: a 5-token prefix before llama.cpp's first near-tie
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let reference = ids(&case["greedy_ids"]);
    let must = case["must_match_prefix"].as_u64().unwrap() as usize;
    let mut req = greedy_req("", 16);
    req.gen.prompt = None;
    req.gen.prompt_ids = Some(ids(&case["prompt_ids"]));
    req.gen.logprobs = Some(0);
    let events = rt().block_on(collect(&WorkerClient::new(&w.url()), &req));
    let got: Vec<(u32, f32)> = events
        .iter()
        .filter_map(|(e, _)| match e {
            WorkerEvent::Token { id, logprob, .. } => {
                Some((*id, logprob.as_ref().expect("logprobs asked").logprob))
            }
            _ => None,
        })
        .collect();
    assert!(got.len() >= must, "{events:?}");
    let got_ids: Vec<u32> = got.iter().map(|g| g.0).collect();
    assert_eq!(got_ids[..must], reference[..must], "greedy prefix");
    // past the prefix: the same tokens until a step where llama.cpp's top-2 were within 0.5
    // nats, and each agreeing token's log-probability within the fixture's 0.6 nats
    let steps = case["steps"].as_array().unwrap();
    for (i, &(id, lp)) in got.iter().enumerate().take(reference.len()) {
        let step = &steps[i];
        let top = step["top"].as_array().unwrap();
        let gap = top[0][1].as_f64().unwrap() - top[1][1].as_f64().unwrap();
        if id != reference[i] {
            assert!(
                gap < 0.5,
                "token {i}: {id} over HTTP, llama.cpp {} with a top-2 gap of {gap:.3}",
                reference[i]
            );
            break;
        }
        let want = step["logprob"].as_f64().unwrap();
        assert!(
            (lp as f64 - want).abs() <= 0.6,
            "token {i}: log-probability {lp} over HTTP, llama.cpp {want}"
        );
    }
}
