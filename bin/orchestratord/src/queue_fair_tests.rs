//! Fair share between tenants in the pure queue.

use std::sync::Arc;
use std::time::Instant;

use llorch_wire::tasks::Priority;

use super::*;
use crate::config::QueuePolicy;

fn take_all(q: &mut TaskQueue) -> Vec<String> {
    std::iter::from_fn(|| q.select(|_| Some(())).map(|(e, ())| e.task_id)).collect()
}

fn et(id: &str, tenant: &str, weight: u32) -> Entry {
    Entry {
        tenant: Arc::from(tenant),
        share: Share {
            weight,
            max_running: None,
        },
        route: None,
        task_id: id.into(),
        model: "m".into(),
        priority: Priority::Batch,
        enqueued: Instant::now(),
        avoid: vec![],
        affinity: None,
    }
}

#[test]
fn tenants_take_turns_fifo_within_each() {
    let mut q = TaskQueue::new(1000, QueuePolicy::Reject, 4);
    for i in 0..100 {
        q.push(et(&format!("a{i}"), "a", 1));
    }
    q.push(et("b0", "b", 1));
    q.push(et("b1", "b", 1));
    q.push(et("c0", "c", 1));
    assert_eq!(q.position("b0"), Some(1));
    assert_eq!(q.position("c0"), Some(2));
    let first: Vec<String> = take_all(&mut q).into_iter().take(7).collect();
    assert_eq!(first, ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]);
}

#[test]
fn weights_share_dispatches_and_positions_match() {
    let mut q = TaskQueue::new(1000, QueuePolicy::Reject, 4);
    for i in 0..30 {
        q.push(et(&format!("h{i}"), "heavy", 3));
        q.push(et(&format!("l{i}"), "light", 1));
    }
    let projected: Vec<String> = q.positions().into_iter().map(|(id, _)| id).collect();
    let taken = take_all(&mut q);
    assert_eq!(
        projected, taken,
        "announced positions are the dispatch order"
    );
    let heavy = taken[..40].iter().filter(|t| t.starts_with('h')).count();
    assert_eq!(heavy, 30, "weight 3 against 1: three of every four");
}

#[test]
fn idle_tenants_bank_no_credit_and_max_running_holds_a_lane() {
    let mut q = TaskQueue::new(1000, QueuePolicy::Reject, 4);
    for i in 0..10 {
        q.push(et(&format!("a{i}"), "a", 1));
    }
    for _ in 0..5 {
        q.select(|_| Some(()));
    }
    // b arrives late: it shares from now on, it does not get five turns in a row
    for i in 0..3 {
        q.push(et(&format!("b{i}"), "b", 1));
    }
    let next: Vec<String> = (0..4)
        .map(|_| q.select(|_| Some(())).unwrap().0.task_id)
        .collect();
    assert_eq!(next, ["b0", "a5", "b1", "a6"]);
    assert_eq!(q.tenant_running("a"), 7);
    q.finished("a");
    assert_eq!(q.tenant_running("a"), 6);

    let mut q = TaskQueue::new(1000, QueuePolicy::Reject, 4);
    let capped = Share {
        weight: 1,
        max_running: Some(1),
    };
    q.push(Entry {
        share: capped,
        ..et("a0", "a", 1)
    });
    q.push(Entry {
        share: capped,
        ..et("a1", "a", 1)
    });
    q.push(et("b0", "b", 1));
    let got: Vec<String> = take_all(&mut q);
    assert_eq!(got, ["a0", "b0"], "a1 waits while a0 runs");
    q.finished("a");
    assert_eq!(take_all(&mut q), ["a1"]);
}

#[test]
fn drop_lru_evicts_from_the_biggest_tenant() {
    let mut q = TaskQueue::new(3, QueuePolicy::DropLru, 4);
    q.push(et("s0", "small", 1));
    q.push(et("f0", "flood", 1));
    q.push(et("f1", "flood", 1));
    match q.push(et("s1", "small", 1)) {
        Admit::Evicted { evicted, .. } => assert_eq!(evicted, "f0"),
        other => panic!("{other:?}"),
    }
    assert_eq!(q.tenant_depth("flood"), 1);
    assert_eq!(q.tenant_depth("small"), 2);
}
