//! The lifecycle worker: judges generations page by page against their bucket's rules
//! and carries out the actions that are due. Protection always wins: a generation under
//! a hold or unexpired retention is not deleted now, and is deleted by a later pass once
//! it becomes deletable, if the rule still matches. Storage-class changes are metadata
//! updates and apply to held objects too, as in GCS.

use super::engine::Storage;
use super::error::{StorageError, StorageResult};
use super::lifecycle::{ActionKind, Subject, decide};
use super::meta::ListQuery;
use super::model::{Bucket, Preconditions};
use chrono::{DateTime, Utc};

/// Generations judged per page (and per checkpoint of the background pass).
pub const LIFECYCLE_PAGE: usize = 500;

/// One action the rules chose, and what became of it.
#[derive(Debug, Clone)]
pub struct LifecycleEvent {
    pub bucket: String,
    pub project: String,
    pub object: String,
    pub generation: i64,
    pub live: bool,
    pub action: ActionKind,
    pub storage_class: Option<String>,
    /// Index of the rule in the bucket's `lifecycle.rule`.
    pub rule: usize,
    /// `Ok` when carried out (or, in a preview, when it would be attempted); otherwise
    /// why not (a hold, retention, a concurrent change).
    pub outcome: Result<(), String>,
}

/// Where a pass over every bucket with rules has got to.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LifecycleCursor {
    pub bucket: String,
    pub after: Option<(String, i64)>,
}

impl Storage {
    /// Judges one page of `bucket` (every generation after `after`) at `now` and, with
    /// `apply`, carries out what is due. Returns the events and where the next page
    /// starts (`None`: the bucket is done).
    pub async fn lifecycle_page(
        &self,
        bucket: &Bucket,
        after: Option<(String, i64)>,
        now: DateTime<Utc>,
        apply: bool,
    ) -> StorageResult<(Vec<LifecycleEvent>, Option<(String, i64)>)> {
        if bucket.lifecycle.is_empty() {
            return Ok((vec![], None));
        }
        let b = bucket;
        let q = ListQuery {
            bucket: b.name.clone(),
            start: String::new(),
            after,
            end: None,
            versions: true,
            limit: LIFECYCLE_PAGE,
            soft_deleted: false,
            bucket_gen: b.generation(),
        };
        let recs = self.meta.list_objects(&q).await?;
        let next = (recs.len() == LIFECYCLE_PAGE)
            .then(|| recs.last().map(|r| (r.name.clone(), r.generation)))
            .flatten();
        // Counting newer generations is a query: only for noncurrent generations (a live
        // one has none) and only when some rule asks.
        let counts_newer = b.lifecycle.iter().any(|r| r.condition.num_newer_versions.is_some());
        let mut decisions = vec![];
        for rec in recs {
            let newer_count = if counts_newer && rec.time_deleted.is_some() {
                self.meta
                    .newer_generations(&rec.bucket, &rec.name, rec.generation)
                    .await
                    .unwrap_or(0)
            } else {
                0
            };
            let custom_time = rec
                .meta
                .custom_time
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            let subject = Subject {
                name: &rec.name,
                storage_class: &rec.storage_class,
                time_created: rec.time_created,
                custom_time,
                noncurrent_since: rec.time_deleted,
            };
            let mut newer = || newer_count;
            if let Some(d) = decide(&b.lifecycle, &subject, now, &mut newer) {
                decisions.push((rec, d));
            }
        }
        let mut events = Vec::with_capacity(decisions.len());
        for (rec, d) in decisions {
            let live = rec.time_deleted.is_none();
            let outcome = if !apply {
                // A preview says what a protection would stop, without acting.
                match d.action.kind {
                    ActionKind::Delete => rec.check_removable(bucket, now).map_err(|e| e.to_string()),
                    _ => Ok(()),
                }
            } else {
                match self
                    .apply_lifecycle_action(&rec, live, &d.action.kind, d.action.storage_class.as_deref(), now)
                    .await
                {
                    Ok(()) => Ok(()),
                    // Changed or gone since it was judged (a client, or another pass):
                    // the next pass judges what is there now.
                    Err(
                        StorageError::PreconditionFailed(_)
                        | StorageError::ConcurrentChange(_)
                        | StorageError::NotFound(_),
                    ) => continue,
                    Err(e) => Err(e.to_string()),
                }
            };
            metrics::counter!(
                "sealstore_lifecycle_actions_total",
                "action" => d.action.kind.as_str(),
                "outcome" => if outcome.is_ok() { "done" } else { "blocked" },
                "mode" => if apply { "apply" } else { "preview" }
            )
            .increment(1);
            events.push(LifecycleEvent {
                bucket: bucket.name.clone(),
                project: bucket.project.clone(),
                object: rec.name.clone(),
                generation: rec.generation,
                live,
                action: d.action.kind,
                storage_class: d.action.storage_class.clone(),
                rule: d.rule,
                outcome,
            });
        }
        Ok((events, next))
    }

    async fn apply_lifecycle_action(
        &self,
        rec: &super::model::ObjectRecord,
        live: bool,
        kind: &ActionKind,
        class: Option<&str>,
        now: DateTime<Utc>,
    ) -> StorageResult<()> {
        // Conditional on the exact generation and metageneration judged: anything that
        // changed since is judged again by the next pass.
        let pre = Preconditions {
            if_generation_match: Some(rec.generation),
            if_metageneration_match: Some(rec.metageneration),
            ..Default::default()
        };
        match kind {
            ActionKind::Delete => {
                // The live generation is deleted as a client delete would (kept as
                // noncurrent on a versioned bucket); a noncurrent one goes for good.
                let generation = if live { None } else { Some(rec.generation) };
                self.delete_object(&rec.bucket, &rec.name, generation, &pre).await
            }
            ActionKind::SetStorageClass => {
                let class = class.ok_or_else(|| StorageError::internal("SetStorageClass without a class"))?;
                self.update_object_meta(&rec.bucket, &rec.name, Some(rec.generation), &pre, |r| {
                    r.storage_class = class.to_owned();
                    r.time_storage_class_updated = Some(now);
                    Ok(())
                })
                .await
                .map(|_| ())
            }
            ActionKind::AbortIncompleteMultipartUpload => Ok(()),
        }
    }

    /// Every bucket that has lifecycle rules, by name.
    pub async fn lifecycle_buckets(&self) -> StorageResult<Vec<Bucket>> {
        self.meta.buckets_with_lifecycle().await
    }

    /// One full pass over every bucket with rules at `now` (what `clock:advance` runs
    /// before it replies). Returns every event.
    pub async fn run_lifecycle(&self, now: DateTime<Utc>) -> StorageResult<Vec<LifecycleEvent>> {
        let mut all = vec![];
        for b in self.lifecycle_buckets().await? {
            let mut after = None;
            loop {
                let (events, next) = self.lifecycle_page(&b, after, now, true).await?;
                all.extend(events);
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        Ok(all)
    }

    /// At most `pages` pages of the background pass, from its persisted cursor; the
    /// cursor is saved when the step stops, so the next step (or a restart) resumes there. Returns
    /// the events and whether the pass finished (the next call starts a new one).
    pub async fn lifecycle_step(&self, now: DateTime<Utc>, pages: usize) -> StorageResult<(Vec<LifecycleEvent>, bool)> {
        let cursor: LifecycleCursor = self
            .meta
            .get_cursor("lifecycle")
            .await?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let buckets = self.lifecycle_buckets().await?;
        let mut events = vec![];
        let mut done_pages = 0;
        for b in buckets.iter().filter(|b| b.name >= cursor.bucket) {
            let mut after = if b.name == cursor.bucket {
                cursor.after.clone()
            } else {
                None
            };
            loop {
                if done_pages >= pages {
                    let c = serde_json::to_string(&LifecycleCursor {
                        bucket: b.name.clone(),
                        after,
                    })?;
                    self.meta.put_cursor("lifecycle", Some(&c)).await?;
                    return Ok((events, false));
                }
                let (ev, next) = self.lifecycle_page(b, after.clone(), now, true).await?;
                events.extend(ev);
                done_pages += 1;
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        self.meta.put_cursor("lifecycle", None).await?;
        Ok((events, true))
    }
}
