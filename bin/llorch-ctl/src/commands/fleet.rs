//! `llorch fleet status|drain|undrain` against orchestratord's `/v2/pools`.

use serde_json::Value;

use super::infer::runtime;
use crate::cli::{FleetAction, FleetArgs};
use crate::error::CliResult;
use crate::orchestrator::OrchClient;

/// Run `llorch fleet ...`.
pub fn run(a: FleetArgs) -> CliResult {
    runtime()?.block_on(async move {
        let c = OrchClient::new(&a.conn.orchestrator);
        let v = match &a.action {
            FleetAction::Status => c.pools().await?,
            FleetAction::Drain { pool } => c.drain(pool, true).await?,
            FleetAction::Undrain { pool } => c.drain(pool, false).await?,
        };
        if a.conn.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("serializable")
            );
        } else {
            match a.action {
                FleetAction::Status => print!("{}", status_text(&v)),
                _ => print!("{}", pools_table(std::slice::from_ref(&v))),
            }
        }
        Ok(0)
    })
}

fn mib(v: &Value) -> String {
    v.as_u64()
        .map(|b| format!("{} MiB", b / (1024 * 1024)))
        .unwrap_or_else(|| "-".into())
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Two aligned tables: pools, then deployments (with errors and log tails below).
pub fn status_text(v: &Value) -> String {
    let empty = Vec::new();
    let pools = v["pools"].as_array().unwrap_or(&empty);
    let mut out = pools_table(pools);
    let mut rows = vec![vec![
        "MODEL".to_string(),
        "STATE".into(),
        "REPLICAS".into(),
        "STARTS".into(),
        "RESTARTS".into(),
        "LOAD MS".into(),
        "PHASE".into(),
    ]];
    let deps = v["deployments"].as_array().unwrap_or(&empty);
    for d in deps {
        rows.push(vec![
            text(&d["model"]),
            text(&d["state"]),
            format!(
                "{} ({}..{})",
                text(&d["replicas"]),
                text(&d["min_replicas"]),
                text(&d["max_replicas"])
            ),
            text(&d["starts"]),
            text(&d["restarts"]),
            d["load_ms"]
                .as_f64()
                .map(|m| format!("{m:.0}"))
                .unwrap_or_else(|| "-".into()),
            match (d["phase"].as_str(), d["phase_pool"].as_str()) {
                (Some(p), Some(pool)) if !pool.is_empty() => format!("{p} on {pool}"),
                (Some(p), _) => p.to_string(),
                _ => "-".into(),
            },
        ]);
    }
    out.push('\n');
    out.push_str(&align(&rows));
    for d in deps {
        if let Some(e) = d["last_error"].as_str() {
            out.push_str(&format!("\n{}: last error: {e}\n", text(&d["model"])));
        }
        if let Some(t) = d["log_tail"].as_str() {
            out.push_str(&format!("--- worker log tail ---\n{t}\n"));
        }
    }
    out
}

/// Pools with reachability, memory and workers.
pub fn pools_table(pools: &[Value]) -> String {
    let mut rows = vec![vec![
        "POOL".to_string(),
        "TRANSPORT".into(),
        "REACHABLE".into(),
        "DRAINED".into(),
        "MEM FREE".into(),
        "PLANNED".into(),
        "CAP".into(),
        "WORKERS".into(),
        "PROBE MS".into(),
    ]];
    let mut errors = String::new();
    for p in pools {
        let workers: Vec<String> = p["workers"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .map(|w| {
                        format!(
                            "{} ({}, busy {})",
                            text(&w["id"]),
                            text(&w["phase"]),
                            text(&w["slots_busy"])
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        rows.push(vec![
            text(&p["name"]),
            text(&p["transport"]),
            text(&p["reachable"]),
            text(&p["drained"]),
            mib(&p["inventory"]["machine"]["mem_available_bytes"]),
            mib(&p["planned_bytes"]),
            mib(&p["max_memory_bytes"]),
            if workers.is_empty() {
                "-".into()
            } else {
                workers.join(", ")
            },
            p["probe_ms"]
                .as_f64()
                .map(|m| format!("{m:.0}"))
                .unwrap_or_else(|| "-".into()),
        ]);
        if let Some(e) = p["last_error"].as_str() {
            errors.push_str(&format!("{}: {e}\n", text(&p["name"])));
        }
    }
    let mut out = align(&rows);
    out.push_str(&errors);
    out
}

/// Rows (the first is the header) as left-aligned columns two spaces apart.
pub fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_shows_pools_deployments_and_errors() {
        let v = serde_json::json!({
            "pools": [{"name": "a", "transport": "local", "reachable": true, "drained": false,
                "planned_bytes": 104857600u64, "max_memory_bytes": null, "probe_ms": 12.3,
                "inventory": {"machine": {"mem_available_bytes": 2147483648u64}},
                "workers": [{"id": "fleet-a-m-1", "phase": "running", "slots_busy": 0}]},
                {"name": "b", "transport": "ssh x", "reachable": false, "last_error": "unreachable: refused", "workers": []}],
            "deployments": [{"model": "m", "state": "ready", "replicas": 1, "min_replicas": 0,
                "max_replicas": 1, "starts": 1, "restarts": 0, "load_ms": 812.0,
                "last_error": "boom", "log_tail": "line"}]
        });
        let t = status_text(&v);
        assert!(
            t.contains("POOL") && t.contains("fleet-a-m-1 (running, busy 0)"),
            "{t}"
        );
        assert!(
            t.contains("2048 MiB") && t.contains("b: unreachable: refused"),
            "{t}"
        );
        assert!(t.contains("m      ready") || t.contains("m  "), "{t}");
        assert!(
            t.contains("m: last error: boom") && t.contains("line"),
            "{t}"
        );
    }
}
