use chrono::Utc;

use super::*;

fn entry(n: u64) -> OutboxEntry {
    OutboxEntry {
        object: "purchase_orders".into(),
        key: n.to_string(),
        event: format!("{{\"n\":{n}}}").into_bytes(),
    }
}

#[tokio::test]
async fn ids_of_any_length_are_stored_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let t = Utc::now();
    let long = "7".repeat(70_000);
    let longer = format!("{long}8");
    let entry = OutboxEntry {
        object: "po".into(),
        key: long.clone(),
        event: b"{}".to_vec(),
    };
    let seen = [SeenEntry {
        updated_at: Some(t),
        id: long.clone(),
        hash: [1; 32],
    }];
    s.commit_page("po", &ObjectState::default(), &seen, vec![entry])
        .await
        .unwrap();
    assert_eq!(s.seen("po", Some(t), &long).unwrap(), Some([1; 32]));
    assert_eq!(s.seen("po", Some(t), &longer).unwrap(), None);
    let key = &s.outbox_after(0, 10).unwrap()[0].1.key;
    assert_eq!(key, &*compact_id(&long));
    assert!(key.len() < 100 && key.starts_with("sha256:"));
}

#[tokio::test]
async fn page_commit_survives_reopen_and_sinks_release() {
    let dir = tempfile::tempdir().unwrap();
    let t = Utc::now();
    {
        let s = Store::open(dir.path()).unwrap();
        let state = ObjectState {
            hwm: Some(t),
            floor: Some(t),
            ..ObjectState::default()
        };
        let seen = [SeenEntry {
            updated_at: Some(t),
            id: "1".into(),
            hash: [7; 32],
        }];
        s.commit_page("po", &state, &seen, vec![entry(1), entry(2)])
            .await
            .unwrap();
        assert_eq!(s.outbox_after(0, 10).unwrap().len(), 2);
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.object_state("po").unwrap().hwm, Some(t));
    assert_eq!(s.seen("po", Some(t), "1").unwrap(), Some([7; 32]));
    assert_eq!(s.seen("po", Some(t), "2").unwrap(), None);
    let out = s.outbox_after(0, 10).unwrap();
    assert_eq!(out.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2]);
    // a later page continues the sequence after reopen
    s.commit_page("po", &ObjectState::default(), &[], vec![entry(3)])
        .await
        .unwrap();
    assert_eq!(s.outbox_after(2, 10).unwrap()[0].0, 3);
    let sinks = vec!["a".to_string(), "b".to_string()];
    let settled = |seqs: &[u64]| Settled {
        outbox: seqs.to_vec(),
        ..Settled::default()
    };
    s.settle("a", settled(&[1, 2, 3])).await.unwrap();
    assert_eq!(s.cursor("a").unwrap(), 3);
    assert_eq!(s.release(&sinks).unwrap(), 0, "b has acked nothing");
    s.settle("b", settled(&[2])).await.unwrap();
    assert_eq!(s.cursor("b").unwrap(), 0, "1 is not settled yet");
    s.settle("b", settled(&[1])).await.unwrap();
    assert_eq!(s.cursor("b").unwrap(), 2);
    assert_eq!(s.release(&sinks).unwrap(), 2);
    assert_eq!(s.outbox_len(), 1);
    assert_eq!(s.backlog(&sinks).unwrap(), 1);
    // A sink added later counts only what is still held.
    let with_new = vec!["a".to_string(), "new".to_string()];
    assert_eq!(s.backlog(&with_new).unwrap(), 1);
    assert_eq!(s.sink_backlog("new").unwrap(), 1);
    assert_eq!(s.sink_backlog("a").unwrap(), 0);
}

fn dead(seq: u64, key: &str) -> DeadLetter {
    DeadLetter {
        sink: "s".into(),
        seq,
        entry: OutboxEntry {
            key: key.into(),
            ..entry(seq)
        },
        error: "HTTP 401".into(),
        attempts: 1,
        first_failed: Utc::now(),
        last_failed: Utc::now(),
        superseded_by: None,
    }
}

fn delivered(seq: u64, key: &str) -> (u64, String, String) {
    (seq, "purchase_orders".into(), key.into())
}

#[tokio::test]
async fn a_newer_delivered_version_supersedes_older_dead_letters_and_queued_replays() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let entries = (1..=6).map(entry).collect();
    s.commit_page("po", &ObjectState::default(), &[], entries)
        .await
        .unwrap();
    // Record `a`: 1 and 2 dead; record `b`: 3 dead.
    let round = Settled {
        outbox: vec![1, 2, 3],
        dead: vec![dead(1, "a"), dead(2, "a"), dead(3, "b")],
        ..Settled::default()
    };
    assert_eq!(s.settle("s", round).await.unwrap(), 0);
    // 2 is queued for replay, then 4 (a newer `a`) is delivered: 1 is
    // marked, 2 leaves the replay queue and is listed as superseded.
    assert_eq!(s.replay_dead(Some("s"), &[2]).await.unwrap(), 1);
    let round = Settled {
        outbox: vec![4],
        delivered: vec![delivered(4, "a")],
        ..Settled::default()
    };
    assert_eq!(s.settle("s", round).await.unwrap(), 2);
    assert!(s.replays("s", 10).unwrap().is_empty());
    let marks: Vec<(u64, Option<u64>)> = s
        .dead_letters(Some("s"))
        .unwrap()
        .iter()
        .map(|d| (d.seq, d.superseded_by))
        .collect();
    assert_eq!(marks, [(1, Some(4)), (2, Some(4)), (3, None)]);
    // Replay skips the superseded; `b`'s replay delivered leaves the index.
    assert_eq!(s.replay_dead(Some("s"), &[]).await.unwrap(), 1);
    let round = Settled {
        replayed: vec![3],
        delivered: vec![delivered(3, "b")],
        ..Settled::default()
    };
    assert_eq!(s.settle("s", round).await.unwrap(), 0);
    // Dropping clears the rest of the index: nothing is left to mark.
    assert_eq!(s.drop_dead(Some("s"), &[]).await.unwrap(), 2);
    assert_eq!(s.inner.held.len(), 0);
    let round = Settled {
        outbox: vec![5, 6],
        delivered: vec![delivered(5, "a"), delivered(6, "b")],
        ..Settled::default()
    };
    assert_eq!(s.settle("s", round).await.unwrap(), 0);
}

#[tokio::test]
async fn reset_cursor_rewinds_and_forgets_what_was_settled_beyond() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let entries = (1..=4).map(entry).collect();
    s.commit_page("po", &ObjectState::default(), &[], entries)
        .await
        .unwrap();
    let round = Settled {
        outbox: vec![1, 2, 4],
        ..Settled::default()
    };
    s.settle("s", round).await.unwrap();
    assert_eq!(
        (s.cursor("s").unwrap(), s.acked_beyond("s").unwrap().len()),
        (2, 1)
    );
    s.reset_cursor("s", 3, false).await.unwrap();
    assert_eq!(s.acked_beyond("s").unwrap().len(), 1, "4 stays settled");
    s.reset_cursor("s", 1, true).await.unwrap();
    assert_eq!(s.cursor("s").unwrap(), 1);
    assert!(s.acked_beyond("s").unwrap().is_empty(), "2..=4 go again");
    s.reset_cursor("s", 0, true).await.unwrap();
    assert_eq!(s.missed("s").unwrap(), None, "no cursor: a new sink");
}

#[tokio::test]
async fn prune_keeps_recent_and_undated() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let old = Utc::now() - chrono::Duration::hours(2);
    let new = Utc::now();
    let seen = [
        SeenEntry {
            updated_at: Some(old),
            id: "1".into(),
            hash: [1; 32],
        },
        SeenEntry {
            updated_at: Some(new),
            id: "2".into(),
            hash: [2; 32],
        },
        SeenEntry {
            updated_at: None,
            id: "3".into(),
            hash: [3; 32],
        },
    ];
    s.commit_page("po", &ObjectState::default(), &seen, vec![])
        .await
        .unwrap();
    s.commit_page("inv", &ObjectState::default(), &seen, vec![])
        .await
        .unwrap();
    assert_eq!(
        s.prune_seen("po", new - chrono::Duration::hours(1))
            .unwrap(),
        1
    );
    assert_eq!(s.seen("po", Some(old), "1").unwrap(), None);
    assert!(s.seen("po", Some(new), "2").unwrap().is_some());
    assert!(s.seen("po", None, "3").unwrap().is_some());
    assert!(
        s.seen("inv", Some(old), "1").unwrap().is_some(),
        "other objects untouched"
    );
}

#[test]
fn second_open_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _a = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).err().expect("must refuse");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
}

#[test]
fn garbage_and_foreign_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::Damaged { .. })
    ));

    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.inner
            .meta
            .insert("format_version", &99u32.to_be_bytes())
            .unwrap();
        s.inner.db.flush().unwrap();
    }
    let err = Store::open(dir.path()).err().unwrap();
    assert!(err.to_string().contains("format version 99"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    std::fs::write(dir.path().join("conf"), b"\xff\xfe garbage").unwrap();
    std::fs::write(dir.path().join("db"), vec![0xAB; 4096]).unwrap();
    let err = Store::open(dir.path())
        .err()
        .expect("garbage must be refused");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
}

#[test]
fn an_empty_database_from_a_crashed_first_start_opens_but_data_without_a_version_does_not() {
    let dir = tempfile::tempdir().unwrap();
    // Killed after sled created its files, before the version was written.
    drop(sled::open(dir.path()).unwrap());
    let s = Store::open(dir.path()).expect("nothing in it: safe to start");
    drop(s);
    assert!(Store::open(dir.path()).is_ok(), "and it now has a version");

    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("objects").unwrap().insert("po", "x").unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path())
        .err()
        .expect("data without a version");
    assert!(err.to_string().contains("no format_version"), "{err}");
}
