//! The durable job queue. A job is a row: enqueued (optionally inside the transaction that made it
//! necessary), claimed under a lease by one worker at a time, then done, retried later with backoff, or
//! parked for the operator once its attempts are spent. Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL,
//! so several processes can work one queue; the embedded store has a single writer connection, which
//! serialises claims by itself.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tenantry_domain::{JobId, TenantId, Timestamp};

use crate::{parsed, Backend, Result, Store, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Done,
    /// Attempts spent: kept for the operator, never run again unless requeued.
    Parked,
}

impl JobState {
    pub const ALL: [Self; 4] = [Self::Queued, Self::Running, Self::Done, Self::Parked];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Parked => "parked",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

#[derive(Clone, Debug)]
pub struct NewJob {
    pub kind: String,
    pub tenant_id: Option<TenantId>,
    /// JSON.
    pub payload: String,
    /// Enqueueing a second job with the same key does nothing.
    pub idempotency_key: Option<String>,
    pub max_attempts: i64,
    pub run_at: Timestamp,
}

#[derive(Clone, Debug)]
pub struct JobRow {
    pub id: JobId,
    pub kind: String,
    pub tenant_id: Option<TenantId>,
    pub payload: String,
    pub idempotency_key: Option<String>,
    pub state: JobState,
    /// Attempts started so far, this one included while running.
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: Timestamp,
    pub locked_until: Option<Timestamp>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

const COLUMNS: &str = "id, kind, tenant_id, payload, idempotency_key, state, attempts, max_attempts, run_at, \
                       locked_until, last_error, created_at, updated_at";

fn job_from_row(row: &AnyRow) -> Result<JobRow> {
    Ok(JobRow {
        id: JobId::from_trusted(row.try_get("id")?),
        kind: row.try_get("kind")?,
        tenant_id: row.try_get::<Option<String>, _>("tenant_id")?.map(TenantId::from_trusted),
        payload: row.try_get("payload")?,
        idempotency_key: row.try_get("idempotency_key")?,
        state: parsed(row, "state", JobState::parse)?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        run_at: Timestamp(row.try_get("run_at")?),
        locked_until: row.try_get::<Option<i64>, _>("locked_until")?.map(Timestamp),
        last_error: row.try_get("last_error")?,
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
    })
}

/// Inserts `job` in `tx`; `false` if a job with its idempotency key already exists.
pub(crate) async fn enqueue_in(tx: &mut Transaction<'static, Any>, job: &NewJob, now: Timestamp) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO jobs (id, kind, tenant_id, payload, idempotency_key, state, attempts, max_attempts, run_at, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, $8, $9) \
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(JobId::generate().as_str())
    .bind(&job.kind)
    .bind(job.tenant_id.as_ref().map(|t| t.as_str().to_owned()))
    .bind(&job.payload)
    .bind(job.idempotency_key.clone())
    .bind(job.max_attempts.max(1))
    .bind(job.run_at.0)
    .bind(now.0)
    .bind(now.0)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The order due jobs are claimed and run in (`claim_order` is the same in Rust).
const CLAIM_ORDER: &str = "CASE WHEN kind = 'export' THEN 1 ELSE 0 END, run_at, id";

fn claim_order(job: &JobRow) -> (bool, i64, &str) {
    (job.kind == "export", job.run_at.0, job.id.as_str())
}

impl Store {
    /// Enqueues `job`; `false` if its idempotency key was already used.
    pub async fn enqueue(&self, job: &NewJob, now: Timestamp) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let inserted = enqueue_in(&mut tx, job, now).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Enqueues `jobs` and records `events` (`emit_in`) in one transaction: a change that moves no state but
    /// must be followed up and reported (a failed payment of a tenant already in dunning).
    pub async fn enqueue_reported(
        &self,
        jobs: &[NewJob],
        events: &[crate::NewEvent<'_>],
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for job in jobs {
            enqueue_in(&mut tx, job, now).await?;
        }
        for event in events {
            crate::webhooks::emit_in(&mut tx, event, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` jobs due at `now` (queued with `run_at <= now`, or running with an expired
    /// lease: their worker died), each leased until `now + lease_secs` with its attempt count raised. Export
    /// archives, the one kind a tenant can queue in bulk, come after every other due job, so an erasure or
    /// a charge never waits behind another tenant's exports.
    pub async fn claim_jobs(&self, now: Timestamp, lease_secs: i64, limit: i64) -> Result<Vec<JobRow>> {
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, locked_until = $1, updated_at = $2 \
             WHERE id IN (SELECT id FROM jobs WHERE (state = 'queued' AND run_at <= $3) \
             OR (state = 'running' AND locked_until < $4) ORDER BY {CLAIM_ORDER} LIMIT $5 {lock}) \
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(now.plus_seconds(lease_secs).0)
            .bind(now.0)
            .bind(now.0)
            .bind(now.0)
            .bind(limit)
            .fetch_all(&self.write)
            .await?;
        let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        jobs.sort_by(|a, b| claim_order(a).cmp(&claim_order(b)));
        Ok(jobs)
    }

    /// Marks a claimed job done. `Concurrent` if the claim was lost (the lease expired and another worker
    /// took the job): that worker's outcome counts, and every job is written to be safe to run twice.
    pub async fn complete_job(&self, job: &JobRow, now: Timestamp) -> Result<()> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'done', locked_until = NULL, last_error = NULL, updated_at = $1 \
             WHERE id = $2 AND state = 'running' AND attempts = $3",
        )
        .bind(now.0)
        .bind(job.id.as_str())
        .bind(job.attempts)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::Concurrent)
        }
    }

    /// Records a failed attempt: the job runs again at `retry_at`, or is parked when its attempts are spent.
    /// Returns the state it is left in.
    pub async fn fail_job(&self, job: &JobRow, error: &str, retry_at: Timestamp, now: Timestamp) -> Result<JobState> {
        let next = if job.attempts >= job.max_attempts { JobState::Parked } else { JobState::Queued };
        let error: String = error.chars().take(2_000).collect();
        let done = sqlx::query(
            "UPDATE jobs SET state = $1, run_at = $2, locked_until = NULL, last_error = $3, updated_at = $4 \
             WHERE id = $5 AND state = 'running' AND attempts = $6",
        )
        .bind(next.as_str())
        .bind(retry_at.0)
        .bind(error)
        .bind(now.0)
        .bind(job.id.as_str())
        .bind(job.attempts)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 1 {
            Ok(next)
        } else {
            Err(StoreError::Concurrent)
        }
    }

    /// Puts a parked job back in the queue with a fresh set of attempts (the operator's retry).
    pub async fn requeue_job(&self, id: &JobId, now: Timestamp) -> Result<JobRow> {
        let sql = format!(
            "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $1, updated_at = $2 \
             WHERE id = $3 AND state = 'parked' RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql).bind(now.0).bind(now.0).bind(id.as_str()).fetch_optional(&self.write).await?;
        row.as_ref().map(job_from_row).transpose()?.ok_or(StoreError::NotFound)
    }

    /// The embedded store belongs to one process: at start, jobs marked running were interrupted by a crash
    /// and can be claimed again at once.
    pub async fn release_running_jobs(&self, now: Timestamp) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'queued', locked_until = NULL, updated_at = $1 WHERE state = 'running'",
        )
        .bind(now.0)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn job(&self, id: &JobId) -> Result<Option<JobRow>> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
        let row = sqlx::query(&sql).bind(id.as_str()).fetch_optional(&self.read).await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Jobs in `state` (all when `None`), optionally of one tenant, oldest first, at most `limit`. The filters
    /// are written into the statement only when given, so an index serves them (`jobs_tenant`, `jobs_due`): a
    /// `$1 IS NULL OR …` filter made SQLite read every job of every tenant.
    pub async fn jobs(&self, state: Option<JobState>, tenant: Option<&TenantId>, limit: i64) -> Result<Vec<JobRow>> {
        let mut filters = Vec::new();
        if state.is_some() {
            filters.push(format!("state = ${}", filters.len() + 1));
        }
        if tenant.is_some() {
            filters.push(format!("tenant_id = ${}", filters.len() + 1));
        }
        let filter = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
        let sql = format!("SELECT {COLUMNS} FROM jobs {filter} ORDER BY run_at, id LIMIT ${}", filters.len() + 1);
        let mut query = sqlx::query(&sql);
        if let Some(state) = state {
            query = query.bind(state.as_str());
        }
        if let Some(tenant) = tenant {
            query = query.bind(tenant.as_str());
        }
        let rows = query.bind(limit).fetch_all(&self.read).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Whether any job is due at `now` or running (the test clock waits for both before it returns).
    pub async fn jobs_pending(&self, now: Timestamp) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE (state = 'queued' AND run_at <= $1) OR state = 'running'",
        )
        .bind(now.0)
        .fetch_one(&self.read)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }
}
