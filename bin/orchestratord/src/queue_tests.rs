//! The pure queue: classes, the starvation bound, full-queue policies, expiry and the drain
//! rate.

use super::*;

fn e(id: &str, p: Priority) -> Entry {
    Entry {
        task_id: id.into(),
        model: "m".into(),
        priority: p,
        enqueued: Instant::now(),
        avoid: vec![],
        affinity: None,
        tenant: Arc::from("t"),
        share: Share::default(),
        route: None,
    }
}

fn take_all(q: &mut TaskQueue) -> Vec<String> {
    std::iter::from_fn(|| q.select(|_| Some(())).map(|(e, ())| e.task_id)).collect()
}

#[test]
fn interactive_first_with_starvation_bound() {
    let mut q = TaskQueue::new(100, QueuePolicy::Reject, 2);
    for i in 0..2 {
        q.push(e(&format!("b{i}"), Priority::Batch));
    }
    for i in 0..5 {
        q.push(e(&format!("i{i}"), Priority::Interactive));
    }
    assert_eq!(take_all(&mut q), ["i0", "i1", "b0", "i2", "i3", "b1", "i4"]);
}

#[test]
fn reject_and_drop_lru() {
    let mut q = TaskQueue::new(2, QueuePolicy::Reject, 4);
    assert_eq!(
        q.push(e("a", Priority::Batch)),
        Admit::Accepted { position: 0 }
    );
    assert_eq!(
        q.push(e("b", Priority::Batch)),
        Admit::Accepted { position: 1 }
    );
    assert_eq!(q.push(e("c", Priority::Batch)), Admit::Full);
    assert_eq!(
        q.push(e("x", Priority::Interactive)),
        Admit::Accepted { position: 0 }
    );

    let mut q = TaskQueue::new(1, QueuePolicy::DropLru, 4);
    q.push(e("i", Priority::Interactive));
    q.push(e("a", Priority::Batch));
    assert_eq!(
        q.push(e("b", Priority::Batch)),
        Admit::Evicted {
            position: 1,
            evicted: "a".into()
        }
    );
    assert_eq!(
        q.push(e("j", Priority::Interactive)),
        Admit::Full,
        "interactive tasks are never evicted"
    );
}

#[test]
fn unplaceable_models_do_not_block_others() {
    let mut q = TaskQueue::new(10, QueuePolicy::Reject, 4);
    q.push(Entry {
        model: "big".into(),
        ..e("a", Priority::Interactive)
    });
    q.push(e("b", Priority::Interactive));
    q.push(Entry {
        model: "big".into(),
        ..e("c", Priority::Interactive)
    });
    let mut asked = Vec::new();
    let got = q.select(|en| {
        asked.push(en.task_id.clone());
        (en.model == "m").then_some(())
    });
    assert_eq!(got.unwrap().0.task_id, "b");
    assert_eq!(asked, ["a", "b"]);
    assert_eq!(q.positions(), [("a".to_string(), 0), ("c".to_string(), 1)]);
}

#[test]
fn remove_retry_and_expiry() {
    let mut q = TaskQueue::new(10, QueuePolicy::Reject, 4);
    q.push(e("a", Priority::Interactive));
    q.push(e("b", Priority::Interactive));
    assert!(q.remove("a"));
    assert!(!q.remove("a"));
    q.push_front(e("r", Priority::Interactive));
    assert_eq!(q.position("r"), Some(0));
    let later = Instant::now() + Duration::from_secs(10);
    assert_eq!(q.take_expired(later, Duration::from_secs(5)).len(), 2);
    assert!(q.is_empty());
}

#[test]
fn drain_rate_sizes_backoff() {
    let mut d = DrainRate::default();
    let t0 = Instant::now();
    assert_eq!(d.backoff_ms(t0), DEFAULT_BACKOFF_MS);
    for i in 0..10 {
        d.record(t0 + Duration::from_millis(100 * i));
    }
    let now = t0 + Duration::from_millis(1000);
    assert_eq!(d.per_sec(now).map(|r| r.round()), Some(10.0));
    assert_eq!(d.backoff_ms(now), 100);
    assert_eq!(d.eta_ms(now, 5), 500);
    // Nothing dispatched for a long time: the suggested wait grows.
    assert!(d.backoff_ms(t0 + Duration::from_secs(20)) > 1000);
}
