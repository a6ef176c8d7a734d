//! One suite every `MetaStore` passes: each check below runs against SQLite (a temp
//! file), PostgreSQL (a fresh database on the throwaway cluster the test process
//! owns) and the in-memory store. Races use many tasks on a multi-thread runtime, so
//! the backends' own serialisation (SQLite's single writer, PostgreSQL's locks, the
//! memory store's one mutex) is what is tested.

use super::{ListQuery, MetaStore, MoveSpec, ReplaceCheck, RestoreSpec};
use crate::error::StorageError;
use crate::model::{Bucket, InlineData, ObjectRecord, Preconditions, UploadSession};
use crate::multipart::{MultipartUpload, Part};
use crate::rekey_job::{JobState, RekeyJob};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

type Store = Arc<dyn MetaStore>;

/// A fixed base time (whole microseconds, as both backends keep them).
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_750_000_000_000_000).unwrap()
}

fn bucket(name: &str) -> Bucket {
    serde_json::from_value(json!({
        "name": name, "project": "proj", "location": "US-EAST1", "location_type": "region",
        "data_locations": [], "storage_class": "STANDARD", "time_created": t0(), "updated": t0(),
        "metageneration": 1, "versioning": false, "labels": {}, "default_kms_key_name": null,
    }))
    .unwrap()
}

fn soft_bucket(name: &str) -> Bucket {
    let mut b = bucket(name);
    b.soft_delete_policy = Some(crate::model::SoftDeletePolicy {
        retention_duration_seconds: 7 * 86_400,
        effective_time: t0(),
    });
    b
}

fn obj(bucket: &str, name: &str, generation: i64) -> ObjectRecord {
    let t = t0() + TimeDelta::microseconds(generation);
    serde_json::from_value(json!({
        "bucket": bucket, "name": name, "generation": generation, "metageneration": 1, "size": 3,
        "meta": {"metadata": {}}, "storage_class": "STANDARD", "time_created": t, "updated": t,
        "component_count": null,
        "envelope": {
            "project": "proj", "kind": "GoogleManaged", "key_version": "kv/1", "wrapped_dek": "AAAA",
            "blob_id": format!("blob-{name}-{generation}"), "nonce_prefix": "AAAA", "parts": [2],
            "sealed_hashes": "AAAA",
        },
    }))
    .unwrap()
}

/// An object whose one sealed segment lives in its row.
fn inline_obj(bucket: &str, name: &str, generation: i64, data: &'static [u8]) -> ObjectRecord {
    let mut r = obj(bucket, name, generation);
    r.envelope.inline = true;
    r.envelope.parts = vec![];
    r.envelope.inline_data = Some(InlineData(bytes::Bytes::from_static(data)));
    r
}

fn session(id: &str, blob: &str, parts: usize) -> UploadSession {
    let mut s: UploadSession = serde_json::from_value(json!({
        "id": id, "bucket": "b", "name": "o", "meta": {"metadata": {}}, "preconditions": {},
        "total": null, "expected_crc32c": null, "expected_md5": null,
        "envelope": obj("b", "o", 1).envelope, "hash_state": "AAAA", "persisted": 0,
        "created": t0(), "completed_generation": null,
    }))
    .unwrap();
    s.envelope.blob_id = blob.to_owned();
    s.envelope.parts = vec![1; parts];
    s
}

fn upload(id: &str, bucket: &str, name: &str, initiated: DateTime<Utc>) -> MultipartUpload {
    serde_json::from_value(json!({
        "id": id, "bucket": bucket, "name": name, "meta": {"metadata": {}}, "storage_class": null,
        "kms_key_name": null, "csek_sha256": null, "force_google_managed": false,
        "protection": {"temporary_hold": false, "event_based_hold": null, "retention": null},
        "preconditions": {}, "initiated": initiated, "initiator": "user:a@x",
    }))
    .unwrap()
}

fn part(upload_id: &str, number: u32, blob: &str) -> Part {
    serde_json::from_value(json!({
        "upload_id": upload_id, "part_number": number, "size": 5, "crc32c": 7,
        "md5": "00112233445566778899aabbccddeeff", "last_modified": t0(),
        "envelope": {
            "project": "proj", "kind": "GoogleManaged", "key_version": "kv/1", "wrapped_dek": "AAAA",
            "blob_id": blob, "nonce_prefix": "AAAA", "parts": [1, 1, 1], "sealed_hashes": "AAAA",
        },
    }))
    .unwrap()
}

fn job(name: &str, state: &str) -> RekeyJob {
    serde_json::from_value(json!({
        "name": name, "bucket": "b", "prefix": "", "from": null, "to": "googleManaged", "mode": "rewrap",
        "state": state, "counters": {"scanned": 1, "rewritten": 0, "skipped": 0, "failed": 0, "bytes": 0},
        "skipped": {}, "failures": [], "create_time": t0(), "update_time": t0(), "cursor": "a/b",
    }))
    .unwrap()
}

fn ok() -> ReplaceCheck {
    Box::new(|_| Ok(()))
}

fn refuse() -> ReplaceCheck {
    Box::new(|r| {
        Err(StorageError::Forbidden {
            reason: "objectUnderActiveHold",
            message: format!("held: {}", r.name),
        })
    })
}

fn if_gen(g: i64) -> Preconditions {
    Preconditions {
        if_generation_match: Some(g),
        ..Default::default()
    }
}

fn none() -> Preconditions {
    Preconditions::default()
}

async fn commit(s: &Store, rec: &ObjectRecord, keep: bool) -> Option<ObjectRecord> {
    s.commit_object(rec, &none(), keep, ok()).await.unwrap()
}

fn list_q(bucket: &str, versions: bool, limit: usize) -> ListQuery {
    ListQuery {
        bucket: bucket.into(),
        versions,
        limit,
        ..Default::default()
    }
}

fn names(recs: &[ObjectRecord]) -> Vec<(String, i64)> {
    recs.iter().map(|r| (r.name.clone(), r.generation)).collect()
}

/// Object-level data (inline segment) as read back.
fn data(r: &ObjectRecord) -> Option<&[u8]> {
    r.envelope.inline_data.as_ref().map(|d| &d.0[..])
}

// ---------------------------------------------------------------------------------
// The checks.

async fn buckets(s: Store) {
    let mut b = bucket("bkt");
    b.labels.insert("k".into(), "v".into());
    s.insert_bucket(&b).await.unwrap();
    // A duplicate is refused and changes nothing.
    let mut other = bucket("bkt");
    other.project = "evil".into();
    assert!(matches!(s.insert_bucket(&other).await, Err(StorageError::Conflict(_))));
    assert_eq!(s.get_bucket("bkt").await.unwrap(), Some(b.clone()));
    assert_eq!(s.get_bucket("nope").await.unwrap(), None);

    // Listing: by project, in byte order, from a prefix, after a name, limited.
    for n in ["a-b", "a.b", "aa", "ab", "b0", "zz"] {
        s.insert_bucket(&bucket(n)).await.unwrap();
    }
    let mut foreign = bucket("a-foreign");
    foreign.project = "other".into();
    s.insert_bucket(&foreign).await.unwrap();
    let listed = |v: Vec<Bucket>| v.into_iter().map(|b| b.name).collect::<Vec<_>>();
    assert_eq!(
        listed(s.list_buckets("proj", "", None, 100).await.unwrap()),
        ["a-b", "a.b", "aa", "ab", "b0", "bkt", "zz"]
    );
    assert_eq!(
        listed(s.list_buckets("proj", "a", None, 100).await.unwrap()),
        ["a-b", "a.b", "aa", "ab"]
    );
    assert_eq!(
        listed(s.list_buckets("proj", "a", Some("a.b"), 1).await.unwrap()),
        ["aa"]
    );
    assert_eq!(
        listed(s.list_buckets("proj", "", Some("bkt"), usize::MAX).await.unwrap()),
        ["zz"]
    );
    assert_eq!(
        listed(s.list_buckets("other", "", None, 10).await.unwrap()),
        ["a-foreign"]
    );

    // update_bucket: only against the expected metageneration.
    let mut b2 = b.clone();
    b2.metageneration = 2;
    b2.versioning = true;
    s.update_bucket(&b2, 1).await.unwrap();
    let mut stale = b.clone();
    stale.metageneration = 2;
    stale.labels.clear();
    assert!(matches!(
        s.update_bucket(&stale, 1).await,
        Err(StorageError::ConcurrentChange(_))
    ));
    assert_eq!(s.get_bucket("bkt").await.unwrap(), Some(b2));
    assert!(matches!(
        s.update_bucket(&bucket("nope"), 1).await,
        Err(StorageError::NotFound(_))
    ));

    // Lifecycle rules are what buckets_with_lifecycle selects on.
    let mut lc = bucket("lc");
    lc.lifecycle =
        vec![serde_json::from_value(json!({"action": {"kind": "Delete"}, "condition": {"age": 30}})).unwrap()];
    s.insert_bucket(&lc).await.unwrap();
    assert_eq!(listed(s.buckets_with_lifecycle().await.unwrap()), ["lc"]);
}

async fn bucket_delete(s: Store) {
    s.insert_bucket(&bucket("b")).await.unwrap();
    assert!(matches!(
        s.delete_bucket("missing", None, t0()).await,
        Err(StorageError::NotFound(_))
    ));
    commit(&s, &obj("b", "o", 10), false).await;
    assert!(matches!(
        s.delete_bucket("b", None, t0()).await,
        Err(StorageError::Conflict(_))
    ));
    // A noncurrent generation alone still makes it non-empty.
    s.delete_object("b", "o", None, &none(), true, ok(), t0())
        .await
        .unwrap();
    assert!(s.get_object("b", "o", None).await.unwrap().is_none());
    assert!(matches!(
        s.delete_bucket("b", None, t0()).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(s.get_bucket("b").await.unwrap().is_some());
    s.delete_object("b", "o", Some(10), &none(), false, ok(), t0())
        .await
        .unwrap();
    assert!(matches!(
        s.delete_bucket("b", Some(7), t0()).await,
        Err(StorageError::PreconditionFailed(_))
    ));
    assert_eq!(s.delete_bucket("b", Some(1), t0()).await.unwrap(), vec![]);
    assert!(s.get_bucket("b").await.unwrap().is_none());

    // With soft delete the bucket is kept as soft-deleted, with its soft-deleted objects,
    // and can come back while its name is free.
    let sb = soft_bucket("sb");
    s.insert_bucket(&sb).await.unwrap();
    commit(&s, &obj("sb", "o", 20), false).await;
    assert!(
        s.delete_object("sb", "o", None, &none(), false, ok(), t0())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.delete_bucket("sb", None, t0()).await.unwrap(), vec![]);
    assert!(s.get_bucket("sb").await.unwrap().is_none());
    let soft = s.get_soft_bucket("sb", sb.generation()).await.unwrap().unwrap();
    assert_eq!(soft.soft_delete_time, Some(t0()));
    assert!(soft.hard_delete_time.unwrap() >= t0() + TimeDelta::days(7));
    assert_eq!(s.list_soft_buckets("proj", "s").await.unwrap().len(), 1);
    assert!(s.list_soft_buckets("proj", "x").await.unwrap().is_empty());
    // Name taken (by a later incarnation): refused, nothing changed.
    let mut squatter = bucket("sb");
    squatter.time_created = t0() + TimeDelta::seconds(1);
    s.insert_bucket(&squatter).await.unwrap();
    assert!(matches!(
        s.restore_bucket("sb", sb.generation(), t0()).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(s.get_soft_bucket("sb", sb.generation()).await.unwrap().is_some());
    s.delete_bucket("sb", None, t0()).await.unwrap();
    let back = s.restore_bucket("sb", sb.generation(), t0()).await.unwrap();
    assert_eq!(back.metageneration, 2);
    assert_eq!(back.soft_delete_time, None);
    assert_eq!(s.get_bucket("sb").await.unwrap(), Some(back));
    assert!(
        s.get_soft_object("sb", sb.generation(), "o", 20)
            .await
            .unwrap()
            .is_some()
    );
    assert!(matches!(
        s.restore_bucket("sb", sb.generation(), t0()).await,
        Err(StorageError::NotFound(_))
    ));
}

/// A bucket delete racing writes into the bucket: either the delete finds the object
/// and refuses, or the write finds no bucket; never an object in a deleted bucket.
async fn bucket_delete_race(s: Store) {
    for i in 0..20 {
        let name = format!("r{i}");
        s.insert_bucket(&bucket(&name)).await.unwrap();
        let (s1, s2, n1, n2) = (s.clone(), s.clone(), name.clone(), name.clone());
        let write = tokio::spawn(async move { s1.commit_object(&obj(&n1, "o", 10), &none(), false, ok()).await });
        let delete = tokio::spawn(async move { s2.delete_bucket(&n2, None, t0()).await });
        let (w, d) = (write.await.unwrap(), delete.await.unwrap());
        match (&w, &d) {
            (Ok(_), Err(StorageError::Conflict(_))) => {
                assert!(s.get_object(&name, "o", None).await.unwrap().is_some());
            }
            (Err(StorageError::NotFound(_)), Ok(_)) => {
                assert!(s.list_objects(&list_q(&name, true, 10)).await.unwrap().is_empty());
            }
            _ => panic!("{w:?} {d:?}"),
        }
    }
}

async fn create_race(s: Store) {
    s.insert_bucket(&bucket("b")).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let s = s.clone();
        tasks.spawn(async move {
            let rec = obj("b", "new", 100 + i);
            s.commit_object(&rec, &if_gen(0), false, ok())
                .await
                .map(|_| rec.generation)
        });
    }
    let mut winners = vec![];
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(g) => winners.push(g),
            Err(StorageError::PreconditionFailed(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let live = s.get_object("b", "new", None).await.unwrap().unwrap();
    assert_eq!(live.generation, winners[0]);
    assert_eq!(s.list_objects(&list_q("b", true, 100)).await.unwrap().len(), 1);
}

async fn generation_preconditions(s: Store) {
    s.insert_bucket(&bucket("b")).await.unwrap();
    assert!(matches!(
        s.commit_object(&obj("missing", "o", 1), &none(), false, ok()).await,
        Err(StorageError::NotFound(_))
    ));
    commit(&s, &obj("b", "o", 10), false).await;
    let fails = [
        if_gen(0),
        if_gen(9),
        Preconditions {
            if_generation_not_match: Some(10),
            ..Default::default()
        },
        Preconditions {
            if_metageneration_match: Some(2),
            ..Default::default()
        },
        Preconditions {
            if_metageneration_not_match: Some(1),
            ..Default::default()
        },
    ];
    for (i, pre) in fails.iter().enumerate() {
        let r = s.commit_object(&obj("b", "o", 20 + i as i64), pre, false, ok()).await;
        assert!(matches!(r, Err(StorageError::PreconditionFailed(_))), "{pre:?}: {r:?}");
    }
    // A refusing replace check (a hold) is checked inside, and leaves everything as it was.
    let r = s.commit_object(&obj("b", "o", 30), &if_gen(10), false, refuse()).await;
    assert!(matches!(r, Err(StorageError::Forbidden { .. })), "{r:?}");
    assert_eq!(
        names(&s.list_objects(&list_q("b", true, 100)).await.unwrap()),
        [("o".into(), 10)]
    );
    // The right preconditions win; without versioning the old generation is returned.
    let pre = Preconditions {
        if_generation_match: Some(10),
        if_metageneration_match: Some(1),
        if_generation_not_match: Some(3),
        if_metageneration_not_match: Some(5),
    };
    let replaced = s.commit_object(&obj("b", "o", 40), &pre, false, ok()).await.unwrap();
    assert_eq!(replaced.map(|r| r.generation), Some(10));
    assert_eq!(
        names(&s.list_objects(&list_q("b", true, 100)).await.unwrap()),
        [("o".into(), 40)]
    );
    // A generation number used twice is refused, not a second row, and the refused
    // commit leaves the one it would have archived live.
    assert!(s.commit_object(&obj("b", "p", 40), &none(), false, ok()).await.is_ok());
    assert!(s.commit_object(&obj("b", "p", 40), &none(), true, ok()).await.is_err());
    assert_eq!(s.get_object("b", "p", None).await.unwrap().unwrap().generation, 40);
    let q = ListQuery {
        start: "p".into(),
        ..list_q("b", true, 100)
    };
    assert_eq!(names(&s.list_objects(&q).await.unwrap()), [("p".into(), 40)]);
}

async fn versioning(s: Store) {
    s.insert_bucket(&bucket("b")).await.unwrap();
    s.insert_bucket(&soft_bucket("sb")).await.unwrap();
    // keep_previous: the old generation stays, noncurrent as of the new one's creation.
    commit(&s, &obj("b", "o", 10), true).await;
    let g2 = obj("b", "o", 20);
    assert!(commit(&s, &g2, true).await.is_none());
    let old = s.get_object("b", "o", Some(10)).await.unwrap().unwrap();
    assert_eq!(old.time_deleted, Some(g2.time_created));
    assert_eq!(s.get_object("b", "o", None).await.unwrap().unwrap().generation, 20);
    assert_eq!(s.newer_generations("b", "o", 10).await.unwrap(), 1);
    assert_eq!(s.newer_generations("b", "o", 5).await.unwrap(), 2);
    let all = s.list_objects(&list_q("b", true, 100)).await.unwrap();
    assert_eq!(names(&all), [("o".into(), 10), ("o".into(), 20)]);
    assert!(all[0].time_deleted.is_some() && all[1].time_deleted.is_none());
    assert_eq!(
        names(&s.list_objects(&list_q("b", false, 100)).await.unwrap()),
        [("o".into(), 20)]
    );
    // Replace: removed and returned (its blob is the caller's to delete).
    let replaced = commit(&s, &obj("b", "o", 30), false).await.unwrap();
    assert_eq!(replaced.generation, 20);
    assert!(s.get_object("b", "o", Some(20)).await.unwrap().is_none());
    // Replace with soft delete on: kept as soft-deleted, so nothing to delete.
    commit(&s, &inline_obj("sb", "o", 40, b"one"), false).await;
    assert!(commit(&s, &obj("sb", "o", 50), false).await.is_none());
    let soft = s
        .get_soft_object("sb", soft_bucket("sb").generation(), "o", 40)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data(&soft), Some(&b"one"[..]));
    assert!(soft.soft_delete_time.is_some());
}

async fn metadata_updates(s: Store) {
    s.insert_bucket(&bucket("b")).await.unwrap();
    let base = obj("b", "o", 10);
    commit(&s, &base, false).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (s, mut rec) = (s.clone(), base.clone());
        tasks.spawn(async move {
            rec.metageneration = 2;
            rec.meta.metadata.insert("writer".into(), i.to_string());
            s.update_object(&rec, 1).await.map(|()| i)
        });
    }
    let mut winners = vec![];
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(i) => winners.push(i),
            Err(StorageError::ConcurrentChange(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let now = s.get_object("b", "o", None).await.unwrap().unwrap();
    assert_eq!(now.metageneration, 2);
    assert_eq!(now.meta.metadata["writer"], winners[0].to_string());

    // Batches: each entry succeeds or fails alone. NUL in user metadata survives.
    let mut fresh = now.clone();
    fresh.metageneration = 3;
    fresh.meta.metadata.insert("nul".into(), "a\0b".into());
    let mut missing = obj("b", "none", 99);
    missing.metageneration = 2;
    let out = s
        .update_objects(vec![(fresh.clone(), 2), (now.clone(), 1), (missing, 1)])
        .await
        .unwrap();
    assert!(out[0].is_ok());
    assert!(matches!(out[1], Err(StorageError::ConcurrentChange(_))));
    assert!(matches!(out[2], Err(StorageError::ConcurrentChange(_))));
    assert_eq!(s.get_object("b", "o", None).await.unwrap(), Some(fresh.clone()));
    // A document holding an escaped NUL is still matched on its metageneration.
    let mut again = fresh.clone();
    again.metageneration = 4;
    s.update_object(&again, 3).await.unwrap();
    assert!(matches!(
        s.update_object(&again, 3).await,
        Err(StorageError::ConcurrentChange(_))
    ));
    assert_eq!(s.get_object("b", "o", None).await.unwrap(), Some(again));

    // A soft-deleted generation can be updated too (re-key jobs re-wrap those).
    let sb = soft_bucket("sb");
    s.insert_bucket(&sb).await.unwrap();
    commit(&s, &obj("sb", "o", 20), false).await;
    s.delete_object("sb", "o", None, &none(), false, ok(), t0())
        .await
        .unwrap();
    let mut soft = s
        .get_soft_object("sb", sb.generation(), "o", 20)
        .await
        .unwrap()
        .unwrap();
    soft.metageneration = 2;
    soft.envelope.key_version = "kv/2".into();
    s.update_object(&soft, 1).await.unwrap();
    let got = s
        .get_soft_object("sb", sb.generation(), "o", 20)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.envelope.key_version, "kv/2");
}

async fn deletes(s: Store) {
    s.insert_bucket(&bucket("b")).await.unwrap();
    assert!(matches!(
        s.delete_object("b", "none", None, &none(), false, ok(), t0()).await,
        Err(StorageError::NotFound(_))
    ));
    commit(&s, &inline_obj("b", "o", 10, b"abc"), true).await;
    assert_eq!(
        data(&s.get_object("b", "o", None).await.unwrap().unwrap()),
        Some(&b"abc"[..])
    );
    // Failed precondition or check: nothing changes.
    assert!(matches!(
        s.delete_object("b", "o", None, &if_gen(9), true, ok(), t0()).await,
        Err(StorageError::PreconditionFailed(_))
    ));
    assert!(matches!(
        s.delete_object("b", "o", None, &none(), true, refuse(), t0()).await,
        Err(StorageError::Forbidden { .. })
    ));
    assert!(s.get_object("b", "o", None).await.unwrap().is_some());
    // Archive: noncurrent as of now, data still readable by generation.
    let now = t0() + TimeDelta::seconds(5);
    assert!(
        s.delete_object("b", "o", None, &if_gen(10), true, ok(), now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.get_object("b", "o", None).await.unwrap().is_none());
    let old = s.get_object("b", "o", Some(10)).await.unwrap().unwrap();
    assert_eq!(old.time_deleted, Some(now));
    assert_eq!(data(&old), Some(&b"abc"[..]));
    // An archived generation cannot be archived again: deleting it by number removes it.
    let gone = s
        .delete_object("b", "o", Some(10), &none(), true, ok(), now)
        .await
        .unwrap();
    assert_eq!(gone.map(|r| r.generation), Some(10));
    assert!(s.list_objects(&list_q("b", true, 10)).await.unwrap().is_empty());
    // A live generation by number: removed.
    commit(&s, &obj("b", "p", 20), false).await;
    let gone = s
        .delete_object("b", "p", Some(20), &none(), false, ok(), now)
        .await
        .unwrap();
    assert_eq!(gone.map(|r| r.generation), Some(20));
    assert!(s.get_object("b", "p", None).await.unwrap().is_none());
}

async fn listing(s: Store) {
    s.insert_bucket(&bucket("b")).await.unwrap();
    // Byte order, whatever the database's collation: upper case first, then `-` (0x2d)
    // before `/` (0x2f), multi-byte UTF-8 last.
    let order = ["B", "a", "a-b", "a/b", "b", "é"];
    let mut g = 0;
    for n in ["é", "a/b", "b", "B", "a-b", "a"] {
        for keep in [true, true, false] {
            g += 10;
            commit(&s, &obj("b", n, g), keep).await;
        }
    }
    let live = s.list_objects(&list_q("b", false, 100)).await.unwrap();
    assert_eq!(live.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), order);
    let all = s.list_objects(&list_q("b", true, 100)).await.unwrap();
    assert_eq!(all.len(), 12);
    let mut sorted = names(&all);
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()).then(a.1.cmp(&b.1)));
    assert_eq!(names(&all), sorted);
    // Pages of 5, each after the last entry of the one before, add up to the whole.
    let mut paged = vec![];
    let mut after = None;
    loop {
        let q = ListQuery {
            after: after.clone(),
            ..list_q("b", true, 5)
        };
        let page = s.list_objects(&q).await.unwrap();
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        after = Some((last.name.clone(), last.generation));
        paged.extend(names(&page));
    }
    assert_eq!(paged, sorted);
    // start and end bound names: [start, end).
    let q = ListQuery {
        start: "a".into(),
        end: Some("b".into()),
        ..list_q("b", false, 100)
    };
    assert_eq!(
        s.list_objects(&q)
            .await
            .unwrap()
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "a-b", "a/b"]
    );
    // after inside one name's versions continues with its next generation.
    let (n, g) = sorted[2].clone();
    let q = ListQuery {
        after: Some((n, g)),
        ..list_q("b", true, 1)
    };
    assert_eq!(names(&s.list_objects(&q).await.unwrap()), [sorted[3].clone()]);
    // Other buckets are not listed.
    assert!(s.list_objects(&list_q("other", true, 100)).await.unwrap().is_empty());
}

async fn soft_delete_restore(s: Store) {
    let sb = soft_bucket("sb");
    s.insert_bucket(&sb).await.unwrap();
    commit(&s, &inline_obj("sb", "o", 10, b"first"), false).await;
    commit(&s, &obj("sb", "p", 11), false).await;
    let now = t0() + TimeDelta::seconds(1);
    assert!(
        s.delete_object("sb", "o", None, &none(), false, ok(), now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.get_object("sb", "o", None).await.unwrap().is_none());
    let soft = s
        .get_soft_object("sb", sb.generation(), "o", 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(soft.soft_delete_time, Some(now));
    assert_eq!(soft.hard_delete_time, Some(now + TimeDelta::days(7)));
    assert_eq!(data(&soft), Some(&b"first"[..]));
    assert!(
        s.get_soft_object("sb", sb.generation() + 1, "o", 10)
            .await
            .unwrap()
            .is_none()
    );
    let q = ListQuery {
        soft_deleted: true,
        bucket_gen: sb.generation(),
        ..list_q("sb", false, 10)
    };
    assert_eq!(names(&s.list_objects(&q).await.unwrap()), [("o".into(), 10)]);

    // Restore: a new live generation with the same data; a failed precondition first
    // changes nothing.
    commit(&s, &obj("sb", "o", 20), false).await;
    let spec = RestoreSpec {
        bucket: "sb".into(),
        name: "o".into(),
        generation: 10,
        new_generation: 30,
        now,
        pre: if_gen(0),
    };
    assert!(matches!(
        s.restore_object(&spec, ok()).await,
        Err(StorageError::PreconditionFailed(_))
    ));
    assert!(matches!(
        s.restore_object(
            &RestoreSpec {
                pre: none(),
                ..spec.clone()
            },
            refuse()
        )
        .await,
        Err(StorageError::Forbidden { .. })
    ));
    let (restored, replaced) = s
        .restore_object(
            &RestoreSpec {
                pre: if_gen(20),
                ..spec.clone()
            },
            ok(),
        )
        .await
        .unwrap();
    // The replaced live generation was soft-deleted in turn (soft delete is on).
    assert!(replaced.is_none());
    assert!(
        s.get_soft_object("sb", sb.generation(), "o", 20)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!((restored.generation, restored.metageneration), (30, 1));
    assert_eq!(restored.soft_delete_time, None);
    let live = s.get_object("sb", "o", None).await.unwrap().unwrap();
    assert_eq!(live.generation, 30);
    assert_eq!(data(&live), Some(&b"first"[..]));
    assert!(
        s.get_soft_object("sb", sb.generation(), "o", 10)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        s.restore_object(&RestoreSpec { pre: none(), ..spec }, ok()).await,
        Err(StorageError::NotFound(_))
    ));
}

async fn hard_deletes(s: Store) {
    let sb = soft_bucket("sb");
    s.insert_bucket(&sb).await.unwrap();
    for g in 1..=3 {
        commit(&s, &obj("sb", &format!("o{g}"), g), false).await;
        s.delete_object(
            "sb",
            &format!("o{g}"),
            None,
            &none(),
            false,
            ok(),
            t0() + TimeDelta::seconds(g),
        )
        .await
        .unwrap();
    }
    // Not due yet.
    let (objs, bkts) = s.take_hard_deletes(t0() + TimeDelta::days(1), 10).await.unwrap();
    assert!(objs.is_empty() && bkts.is_empty());
    // Due: at most `limit`, earliest first, and gone once taken.
    let later = t0() + TimeDelta::days(8);
    let (objs, _) = s.take_hard_deletes(later, 2).await.unwrap();
    assert_eq!(names(&objs), [("o1".into(), 1), ("o2".into(), 2)]);
    let (objs, _) = s.take_hard_deletes(later, 10).await.unwrap();
    assert_eq!(names(&objs), [("o3".into(), 3)]);
    assert!(s.take_hard_deletes(later, 10).await.unwrap().0.is_empty());
    // A soft-deleted bucket goes with what is left of its soft-deleted objects.
    commit(&s, &obj("sb", "x", 9), false).await;
    s.delete_object("sb", "x", None, &none(), false, ok(), later)
        .await
        .unwrap();
    s.delete_bucket("sb", None, later).await.unwrap();
    let much_later = later + TimeDelta::days(8);
    let (objs, bkts) = s.take_hard_deletes(much_later, 0).await.unwrap();
    assert!(objs.is_empty());
    assert_eq!(bkts.len(), 1);
    assert_eq!(bkts[0].0.name, "sb");
    assert_eq!(names(&bkts[0].1), [("x".into(), 9)]);
    assert!(s.get_soft_bucket("sb", sb.generation()).await.unwrap().is_none());
    assert_eq!(s.take_hard_deletes(much_later, 10).await.unwrap().1.len(), 0);
}

async fn moves(s: Store) {
    s.insert_bucket(&bucket("b")).await.unwrap();
    commit(&s, &inline_obj("b", "src", 10, b"data"), false).await;
    commit(&s, &obj("b", "dst", 11), false).await;
    let mv = MoveSpec {
        bucket: "b".into(),
        src: "src".into(),
        dst: "dst".into(),
        generation: 20,
        now: t0(),
        src_pre: none(),
        dst_pre: none(),
        keep_previous: false,
    };
    // Failed source or destination preconditions, a refused source or destination
    // check: nothing moves.
    for (spec, refuse_src, refuse_dst) in [
        (
            MoveSpec {
                src_pre: if_gen(9),
                ..mv.clone()
            },
            false,
            false,
        ),
        (
            MoveSpec {
                dst_pre: if_gen(0),
                ..mv.clone()
            },
            false,
            false,
        ),
        (mv.clone(), true, false),
        (mv.clone(), false, true),
    ] {
        let pick = |refusing: bool| if refusing { refuse() } else { ok() };
        assert!(
            s.move_object(&spec, pick(refuse_src), pick(refuse_dst)).await.is_err(),
            "{spec:?}"
        );
    }
    assert!(matches!(
        s.move_object(
            &MoveSpec {
                src: "none".into(),
                ..mv.clone()
            },
            ok(),
            ok()
        )
        .await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        s.move_object(
            &MoveSpec {
                dst: "src".into(),
                ..mv.clone()
            },
            ok(),
            ok()
        )
        .await,
        Err(StorageError::BadRequest { .. })
    ));
    assert_eq!(s.list_objects(&list_q("b", true, 10)).await.unwrap().len(), 2);
    let (moved, replaced) = s
        .move_object(
            &MoveSpec {
                dst_pre: if_gen(11),
                ..mv
            },
            ok(),
            ok(),
        )
        .await
        .unwrap();
    assert_eq!((moved.name.as_str(), moved.generation), ("dst", 20));
    assert_eq!(replaced.map(|r| r.generation), Some(11));
    assert!(s.get_object("b", "src", None).await.unwrap().is_none());
    let live = s.get_object("b", "dst", None).await.unwrap().unwrap();
    assert_eq!(live.generation, 20);
    assert_eq!(data(&live), Some(&b"data"[..]));
    assert_eq!(
        names(&s.list_objects(&list_q("b", true, 10)).await.unwrap()),
        [("dst".into(), 20)]
    );
}

async fn sessions(s: Store) {
    assert_eq!(s.count_sessions().await.unwrap(), 0);
    let mut a = session("s1", "blob-s1", 1);
    s.put_session(&a).await.unwrap();
    s.put_session(&session("s2", "blob-s2", 1)).await.unwrap();
    a.persisted = 4096;
    s.put_session(&a).await.unwrap();
    assert_eq!(s.get_session("s1").await.unwrap(), Some(a));
    assert_eq!(s.count_sessions().await.unwrap(), 2);
    s.delete_session("s1").await.unwrap();
    s.delete_session("s1").await.unwrap();
    assert_eq!(s.get_session("s1").await.unwrap(), None);
    assert_eq!(s.count_sessions().await.unwrap(), 1);
}

async fn multipart(s: Store) {
    assert!(matches!(
        s.put_part(&part("missing", 1, "x")).await,
        Err(StorageError::Gone(_))
    ));
    for (id, name, age) in [("u2", "a/x", 1), ("u1", "a/x", 2), ("u3", "a/y", 3), ("u4", "b", 4)] {
        s.put_multipart(&upload(id, "bk", name, t0() - TimeDelta::days(age)))
            .await
            .unwrap();
    }
    assert_eq!(s.get_multipart("u1").await.unwrap().unwrap().name, "a/x");
    assert!(s.get_multipart("none").await.unwrap().is_none());
    let ids = |v: Vec<MultipartUpload>| v.into_iter().map(|u| u.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_multipart("bk", "a/", None, 10).await.unwrap()),
        ["u1", "u2", "u3"]
    );
    assert_eq!(
        ids(s
            .list_multipart("bk", "a/", Some(("a/x".into(), "u1".into())), 1)
            .await
            .unwrap()),
        ["u2"]
    );
    assert_eq!(ids(s.list_multipart("bk", "", None, 10).await.unwrap()).len(), 4);
    assert!(s.list_multipart("other", "", None, 10).await.unwrap().is_empty());
    let mut before = s.multipart_started_before(t0() - TimeDelta::hours(36)).await.unwrap();
    before.sort();
    assert_eq!(before, ["u1", "u3", "u4"]);

    for n in [3, 1, 2] {
        assert!(s.put_part(&part("u1", n, &format!("p{n}"))).await.unwrap().is_none());
    }
    let old = s.put_part(&part("u1", 2, "p2b")).await.unwrap().unwrap();
    assert_eq!(old.envelope.blob_id, "p2");
    let listed = s.list_parts("u1", 0, 10).await.unwrap();
    let blobs = |v: &[Part]| v.iter().map(|p| p.envelope.blob_id.clone()).collect::<Vec<_>>();
    assert_eq!(blobs(&listed), ["p1", "p2b", "p3"]);
    assert_eq!(blobs(&s.list_parts("u1", 1, 1).await.unwrap()), ["p2b"]);
    let parts = s.delete_multipart("u1").await.unwrap().unwrap();
    assert_eq!(blobs(&parts), ["p1", "p2b", "p3"]);
    assert!(s.delete_multipart("u1").await.unwrap().is_none());
    assert!(s.list_parts("u1", 0, 10).await.unwrap().is_empty());
    assert!(matches!(
        s.put_part(&part("u1", 1, "late")).await,
        Err(StorageError::Gone(_))
    ));

    // Racing uploads of one part number: every replaced part is handed back once, so
    // no blob is forgotten.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let s = s.clone();
        tasks.spawn(async move { s.put_part(&part("u2", 7, &format!("r{i}"))).await });
    }
    let mut replaced = vec![];
    while let Some(r) = tasks.join_next().await {
        if let Some(p) = r.unwrap().unwrap() {
            replaced.push(p.envelope.blob_id);
        }
    }
    let last = s.list_parts("u2", 0, 10).await.unwrap();
    replaced.extend(blobs(&last));
    replaced.sort();
    replaced.dedup();
    assert_eq!(replaced.len(), 16);
}

async fn rekey_jobs_and_cursors(s: Store) {
    s.put_rekey_job(&job("j1", "RUNNING")).await.unwrap();
    s.put_rekey_job(&job("j2", "SUCCEEDED")).await.unwrap();
    assert_eq!(s.get_rekey_job("j1").await.unwrap(), Some(job("j1", "RUNNING")));
    assert!(s.get_rekey_job("none").await.unwrap().is_none());
    let running = s.running_rekey_jobs().await.unwrap();
    assert_eq!(running.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(), ["j1"]);
    let mut done = job("j1", "CANCELLED");
    done.counters.scanned = 9;
    s.put_rekey_job(&done).await.unwrap();
    assert!(s.running_rekey_jobs().await.unwrap().is_empty());
    assert_eq!(s.get_rekey_job("j1").await.unwrap().unwrap().state, JobState::Cancelled);

    assert_eq!(s.get_cursor("lifecycle").await.unwrap(), None);
    s.put_cursor("lifecycle", Some("b/o")).await.unwrap();
    s.put_cursor("lifecycle", Some("b/p")).await.unwrap();
    s.put_cursor("other", Some("x")).await.unwrap();
    assert_eq!(s.get_cursor("lifecycle").await.unwrap().as_deref(), Some("b/p"));
    s.put_cursor("lifecycle", None).await.unwrap();
    assert_eq!(s.get_cursor("lifecycle").await.unwrap(), None);
    assert_eq!(s.get_cursor("other").await.unwrap().as_deref(), Some("x"));
}

async fn blob_ids(s: Store) {
    s.insert_bucket(&bucket("b")).await.unwrap();
    s.insert_bucket(&soft_bucket("sb")).await.unwrap();
    commit(&s, &obj("b", "o", 10), false).await;
    commit(&s, &inline_obj("b", "i", 11, b"x"), false).await;
    commit(&s, &obj("sb", "o", 12), false).await;
    s.delete_object("sb", "o", None, &none(), false, ok(), t0())
        .await
        .unwrap();
    s.put_session(&session("s1", "blob-sess", 4)).await.unwrap();
    s.put_multipart(&upload("u1", "b", "m", t0())).await.unwrap();
    s.put_part(&part("u1", 1, "blob-part")).await.unwrap();
    let ids = s.blob_ids().await.unwrap();
    let want: std::collections::HashMap<String, usize> = [
        ("blob-o-10", 1),
        ("blob-i-11", 0),
        ("blob-o-12", 1),
        ("blob-sess", 4),
        ("blob-part", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(ids, want);
}

async fn by_key(s: Store) {
    s.insert_bucket(&bucket("b")).await.unwrap();
    s.insert_bucket(&soft_bucket("sb")).await.unwrap();
    let keyed = |b: &str, n: &str, g: i64, kv: &str| {
        let mut r = obj(b, n, g);
        r.envelope.key_version = kv.into();
        r
    };
    commit(&s, &keyed("b", "a", 1, "k/1"), true).await;
    commit(&s, &keyed("b", "a", 2, "k/2"), true).await;
    commit(&s, &keyed("b", "c", 3, "k/1"), false).await;
    commit(&s, &keyed("b", "d", 4, "other/1"), false).await;
    let mut csek = obj("b", "e", 5);
    csek.envelope.csek_sha256 = Some("SHA".into());
    commit(&s, &csek, false).await;
    commit(&s, &keyed("sb", "s", 6, "k/1"), false).await;
    s.delete_object("sb", "s", None, &none(), false, ok(), t0())
        .await
        .unwrap();

    let got = s.objects_by_key("b", "k/", "k0", None, 10).await.unwrap();
    assert_eq!(names(&got), [("a".into(), 1), ("a".into(), 2), ("c".into(), 3)]);
    let got = s
        .objects_by_key("b", "k/", "k0", Some(("a".into(), 1)), 1)
        .await
        .unwrap();
    assert_eq!(names(&got), [("a".into(), 2)]);
    assert_eq!(
        names(&s.objects_by_key("b", "csek:", "csek;", None, 10).await.unwrap()),
        [("e".into(), 5)]
    );
    // Soft-deleted generations are found by key too (re-key jobs re-wrap them).
    assert_eq!(
        names(&s.objects_by_key("sb", "k/", "k0", None, 10).await.unwrap()),
        [("s".into(), 6)]
    );
    let mut exact = names(&s.objects_with_key_version("k/1").await.unwrap());
    exact.sort();
    assert_eq!(exact, [("a".into(), 1), ("c".into(), 3)]);
}

async fn generations(s: Store) {
    let now = Utc::now().timestamp_micros();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let s = s.clone();
        tasks.spawn(async move { s.next_generation(now).await.unwrap() });
    }
    let mut all = vec![];
    while let Some(g) = tasks.join_next().await {
        all.push(g.unwrap());
    }
    assert!(all.iter().all(|g| *g >= now));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 64);
    // One caller: strictly increasing, and never below the clock it is given.
    let mut prev = *all.last().unwrap();
    for _ in 0..10 {
        let g = s.next_generation(0).await.unwrap();
        assert!(g > prev);
        prev = g;
    }
    let ahead = prev + 1_000_000;
    assert_eq!(s.next_generation(ahead).await.unwrap(), ahead);
    assert_eq!(s.next_generation(ahead).await.unwrap(), ahead + 1);
    s.ping().await.unwrap();
}

// ---------------------------------------------------------------------------------
// The backends.

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A SQLite store on a file of its own, removed when the test ends.
struct SqliteFile {
    dir: std::path::PathBuf,
}

impl SqliteFile {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sealstore-meta-conformance-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    fn open(&self) -> Store {
        Arc::new(super::SqliteMetaStore::open(&self.dir.join("meta.db")).unwrap())
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn postgres(url: &str) -> Store {
    let pool = sealstore_core::pg::pool(url, 8).unwrap();
    Arc::new(super::PgMetaStore::new(pool).await.unwrap())
}

/// A fresh in-memory store.
fn memory() -> Store {
    Arc::new(super::MemoryMetaStore::new())
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(super::memory()).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let file = super::SqliteFile::new();
                    super::$check(file.open()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    let url = sealstore_testpg::fresh_database();
                    super::$check(super::postgres(&url).await).await;
                }
            )*
        }
    };
}

conformance!(
    buckets,
    bucket_delete,
    bucket_delete_race,
    create_race,
    generation_preconditions,
    versioning,
    metadata_updates,
    deletes,
    listing,
    soft_delete_restore,
    hard_deletes,
    moves,
    sessions,
    multipart,
    rekey_jobs_and_cursors,
    blob_ids,
    by_key,
    generations,
);

/// A reopened SQLite store continues after the generations it already holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_generations_continue_after_reopen() {
    let file = SqliteFile::new();
    let s = file.open();
    s.insert_bucket(&bucket("b")).await.unwrap();
    let far = Utc::now().timestamp_micros() + 3_600_000_000;
    commit(&s, &obj("b", "o", far), false).await;
    drop(s);
    assert_eq!(file.open().next_generation(0).await.unwrap(), far + 1);
}

/// A memory store starts empty with generations from 0: nothing is persisted, so a new
/// one shares nothing with an earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_stores_start_empty() {
    let a = memory();
    a.insert_bucket(&bucket("b")).await.unwrap();
    assert_eq!(a.next_generation(0).await.unwrap(), 1);
    let b = memory();
    assert!(b.get_bucket("b").await.unwrap().is_none());
    assert_eq!(b.next_generation(0).await.unwrap(), 1);
}

/// A caller's check that panics (it runs under the memory store's lock) leaves the
/// store usable and unchanged: checks run before anything is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_survives_a_panicking_check() {
    let s = memory();
    s.insert_bucket(&bucket("b")).await.unwrap();
    commit(&s, &obj("b", "o", 10), false).await;
    let s2 = s.clone();
    let panicked = tokio::spawn(async move {
        s2.commit_object(
            &obj("b", "o", 20),
            &none(),
            false,
            Box::new(|_| panic!("a check panics")),
        )
        .await
    })
    .await;
    assert!(panicked.is_err());
    assert_eq!(s.get_object("b", "o", None).await.unwrap().unwrap().generation, 10);
    commit(&s, &obj("b", "o", 30), false).await;
    assert_eq!(
        names(&s.list_objects(&list_q("b", true, 10)).await.unwrap()),
        [("o".into(), 30)]
    );
}

/// Two gateways on one PostgreSQL database: generations stay distinct and increasing
/// across both, a write by one is seen by the other, and the second's start (the
/// migration again) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_gateways_share_one_database() {
    let url = sealstore_testpg::fresh_database();
    let a = postgres(&url).await;
    a.insert_bucket(&bucket("b")).await.unwrap();
    let far = a
        .next_generation(Utc::now().timestamp_micros() + 3_600_000_000)
        .await
        .unwrap();
    commit(&a, &obj("b", "o", far), false).await;
    let b = postgres(&url).await;
    assert_eq!(b.get_object("b", "o", None).await.unwrap().unwrap().generation, far);
    let ga = a.next_generation(0).await.unwrap();
    let gb = b.next_generation(0).await.unwrap();
    assert!(ga > far && gb > ga, "{far} {ga} {gb}");

    let now = Utc::now().timestamp_micros();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let mut got = vec![];
            for _ in 0..4 {
                got.push(s.next_generation(now).await.unwrap());
            }
            got
        });
    }
    let mut all = vec![];
    while let Some(g) = tasks.join_next().await {
        let g = g.unwrap();
        // Each caller's own sequence increases.
        assert!(g.windows(2).all(|w| w[0] < w[1]), "{g:?}");
        all.extend(g);
    }
    assert!(all.iter().all(|g| *g > far));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 256);

    // 32 racers over both gateways on one new name: exactly one creates it.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            s.commit_object(&obj("b", "race", far + 10 + i), &if_gen(0), false, ok())
                .await
        });
    }
    let mut wins = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(_) => wins += 1,
            Err(StorageError::PreconditionFailed(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(wins, 1);
}

/// A failed generation bump (the counter at its limit) fails that call only: the
/// connection it used goes back to the pool usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_generation_overflow_fails_cleanly() {
    let url = sealstore_testpg::fresh_database();
    // One connection, so the call after the failure reuses it.
    let s = super::PgMetaStore::new(sealstore_core::pg::pool(&url, 1).unwrap())
        .await
        .unwrap();
    let db = url.rsplit('/').next().unwrap();
    let cluster = sealstore_testpg::cluster();
    cluster
        .psql(db, &format!("UPDATE meta_generation SET v = {}", i64::MAX))
        .unwrap();
    assert!(matches!(s.next_generation(0).await, Err(StorageError::Internal(_))));
    cluster.psql(db, "UPDATE meta_generation SET v = 5").unwrap();
    assert_eq!(s.next_generation(0).await.unwrap(), 6);
    s.ping().await.unwrap();
}

/// A database that went away is "unavailable" (503), and the error names no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_unreachable_is_unavailable() {
    // A port nothing listens on: bind one, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pool = sealstore_core::pg::pool(&format!("postgres://u:sekrit@127.0.0.1:{port}/db"), 2).unwrap();
    let err = match super::PgMetaStore::new(pool).await {
        Ok(_) => panic!("a store on no database"),
        Err(e) => e,
    };
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains("sekrit"), "{err}");
}

/// A fresh database whose default collation is linguistic (ICU English sorts `a`
/// before `B` and ignores punctuation at first).
fn icu_database() -> String {
    let cluster = sealstore_testpg::cluster();
    let name = format!("icu{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    cluster
        .psql(
            "postgres",
            &format!("CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"),
        )
        .unwrap();
    format!("postgres://postgres@127.0.0.1:{}/{name}", cluster.port)
}

/// Listings and key ranges stay in byte order whatever the database's collation: the
/// name and key columns carry their own "C" collation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_orders_bytes_under_a_linguistic_collation() {
    buckets(postgres(&icu_database()).await).await;
    listing(postgres(&icu_database()).await).await;
    by_key(postgres(&icu_database()).await).await;
}
