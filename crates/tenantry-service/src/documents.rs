//! Documents: upload (parse, chunk, embed, record, index), list, fetch, delete. An upload either lands whole
//! — rows, vectors, original bytes, change record and ledger events, in one transaction — or leaves nothing
//! behind; the search index follows the rows (`index_sync`).

use serde::Serialize;
use sha2::{Digest, Sha256};
use tenantry_domain::quota::Meter;
use tenantry_domain::{ChunkId, DocumentId, ErrorCode, TenantContext, TenantId, TenantState, Timestamp};
use tenantry_ingest::{Chunk, ChunkOptions, Format, IngestError, Limits, ParsedDocument, TextFloor};
use tenantry_search::ChunkToIndex;
use tenantry_store::{Amounts, DocumentRow, Inserted, JobState, NewChunk, NewDocument, StoreError, UsageEvent};
use utoipa::ToSchema;

use crate::jobs::Job;
use crate::{ServiceError, ServiceResult, Services};

/// An upload as the HTTP layer hands it over.
pub struct Upload {
    pub title: Option<String>,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// An upload's bytes watched as they arrive: a plain-text file sure to pass the plan's text limit is refused
/// (413, the reason parsing would give) before the rest of it is read.
pub struct ArrivingUpload(Option<TextFloor>);

impl ArrivingUpload {
    pub fn new(ctx: &TenantContext, content_type: Option<&str>, file_name: Option<&str>) -> Self {
        let limits = Limits { text_bytes: ctx.plan.limits.document_text_bytes, ..Limits::default() };
        // A format not detected is refused by `upload_document` once the file is read.
        Self(Format::detect(content_type, file_name).map(|format| TextFloor::new(format, limits)))
    }

    pub fn arrived(&mut self, bytes: &[u8]) -> ServiceResult<()> {
        self.0.as_mut().map_or(Ok(()), |floor| floor.arrived(bytes).map_err(ingest_error))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentView {
    #[schema(value_type = String)]
    pub document_id: DocumentId,
    pub title: String,
    pub content_type: String,
    pub bytes: i64,
    pub chunks: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    pub status: DocumentStatus,
}

/// How far a stored document is searchable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentStatus {
    /// Every retrieval mode of the tenant's plan finds it.
    Ready,
    /// Stored and found by BM25; its vectors are being made (a long upload with a local model), so semantic
    /// retrieval does not see it yet.
    Indexing,
}

/// The outcome of an upload: a new document, or the existing one with identical content.
pub enum Uploaded {
    Created(DocumentView),
    Duplicate(DocumentView),
}

pub const MAX_TITLE_CHARS: usize = 500;

impl Services {
    /// Stores an upload: admitted (type, title, quota, one of the tenant's upload slots), parsed and chunked
    /// within the limits, embedded when it is short or the embedder bills, then written whole in one
    /// transaction and caught up into this node's index.
    pub async fn upload_document(&self, ctx: &TenantContext, upload: Upload) -> ServiceResult<Uploaded> {
        let admitted = match self.admit_upload(ctx, upload).await? {
            Admission::Replay(existing) => return Ok(Uploaded::Duplicate(self.view(ctx, existing))),
            Admission::New(admitted) => admitted,
        };
        let AdmittedUpload { format, supplied_title, file_name, sha, bytes, _in_flight } = admitted;
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let (parsed, chunks, bytes) = self.parse_upload(ctx, format, bytes).await?;
        let stored = size.saturating_add(i64::try_from(parsed.text_bytes()).unwrap_or(i64::MAX));
        let title = supplied_title.or(parsed.title).or(file_name).unwrap_or_else(|| "Untitled".to_owned());
        check_title(&title)?;

        let now = self.clock().now();
        let doc_id = DocumentId::generate();
        let (mut new_chunks, to_index) = chunk_rows(&doc_id, &chunks);
        // An upstream embedder bills the tokens of what it embeds: reserved here at their count with the real
        // tokenizer (OpenAI's own for its embedding models), settled at what the upstream reports.
        let billed_model = self.embedding_model().filter(|_| ctx.index_vectors).cloned();
        let embedding_estimate = match &billed_model {
            Some(_) => self.embedding_tokens_of(&title, &to_index),
            None => 0,
        };
        let reserved =
            Amounts { documents: 1, storage_bytes: stored, tokens: embedding_estimate, ..Amounts::default() };
        let reservation = self.reserve(ctx, reserved).await?;

        // 1. The vectors, when the tenant's plan searches them and the document is short or the embedder
        // billed (else a job makes them, `TextEmbedder::chunks_in_request`): before anything is written, so a model
        // failure leaves nothing behind. 2. Rows, vectors (or the job), the original, the change record and
        // the ledger events, in one transaction: the document exists for every node or for none. 3. This
        // node's index, caught up from the rows (every other node catches up the same way).
        // An upstream embedder's tokens are metered with the upload, so it always embeds in the request.
        let embed_later = ctx.index_vectors
            && billed_model.is_none()
            && to_index.len() > self.search().embedder().chunks_in_request();
        let embed_now = ctx.index_vectors && !embed_later;
        let embedding_tokens = match embed_now {
            true => self.embed_chunks(&title, to_index, &mut new_chunks).await?,
            false => 0,
        };
        let embedder = match embed_now {
            true => self.search().embedder_name().to_owned(),
            false => String::new(),
        };
        let doc = NewDocument {
            id: doc_id.clone(),
            tenant_id: ctx.tenant_id.clone(),
            title,
            content_type: format.content_type().to_owned(),
            bytes: size,
            stored_bytes: stored,
            content_sha256: sha,
            now,
            embedder,
            embed_later: embed_later
                .then(|| Job::EmbedDocument { tenant_id: ctx.tenant_id.clone(), document_id: doc_id.clone() }.at(now)),
        };
        let mut events = level_events(ctx, &doc_id, "upload", 1, doc.stored_bytes, now);
        let mut actual = Amounts { documents: 1, storage_bytes: doc.stored_bytes, ..Amounts::default() };
        if let Some(model) = billed_model.filter(|_| embedding_tokens > 0) {
            events.push(embedding_event(ctx, &format!("{doc_id}:upload"), &model, embedding_tokens, now));
            actual.tokens = i64::try_from(embedding_tokens).unwrap_or(i64::MAX);
        }
        let settlement = self.settlement_for(ctx, Some(&reservation), actual);
        match self.store().insert_document(&doc, &new_chunks, &bytes, &settlement, &events).await {
            // An identical upload racing this one was stored first: nothing of this one was written, its quota
            // is released (the reservation's drop), and the request is answered as the replay it is.
            Ok(Inserted::Existing(existing)) => Ok(Uploaded::Duplicate(self.view(ctx, existing))),
            Ok(Inserted::New(row)) => {
                Self::mark_settled(reservation);
                self.after_upload(ctx, &doc_id, embed_later).await?;
                tracing::info!(document_id = %doc_id, chunks = row.chunks, bytes = row.bytes, embed_later, "document indexed");
                Ok(Uploaded::Created(self.view(ctx, row)))
            }
            Err(StoreError::TenantErased) => Err(self.upload_outlived_its_tenant(ctx).await),
            Err(e) => Err(e.into()),
        }
    }

    /// What an upload must pass before it is parsed: a known type, something in it, a valid title, not a
    /// replay of a stored document, quota plainly left, and one of the tenant's upload slots (held until the
    /// upload ends).
    async fn admit_upload(&self, ctx: &TenantContext, upload: Upload) -> ServiceResult<Admission> {
        let format = Format::detect(upload.content_type.as_deref(), upload.file_name.as_deref()).ok_or_else(|| {
            ServiceError::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "unsupported document type {:?}; send application/pdf, text/html, text/markdown or text/plain \
                     (or a .pdf, .html, .md or .txt file)",
                    upload.content_type.as_deref().unwrap_or("(none)")
                ),
            )
        })?;
        if upload.bytes.is_empty() {
            return Err(ServiceError::validation("the document is empty"));
        }
        // The caller's own title is checked before deciding the upload is a replay of a stored document.
        let supplied_title = upload.title.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
        if let Some(title) = &supplied_title {
            check_title(title)?;
        }
        // Hashing 64 MiB takes tens of milliseconds: on the parser threads, not the workers answering requests.
        let (sha, bytes) = self
            .inner
            .parsing
            .run(move || {
                let sha = hex::encode(Sha256::digest(&upload.bytes));
                (sha, upload.bytes)
            })
            .await?;
        if let Some(existing) = self.store().document_by_digest(&ctx.tenant_id, &sha).await? {
            return Ok(Admission::Replay(existing));
        }
        // Parsing decides what an upstream embedder will bill, so quota is reserved once the chunks are known;
        // this spares the parsing when the quota is plainly used up.
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        self.precheck(ctx, Amounts { documents: 1, storage_bytes: size, ..Amounts::default() }).await?;
        let limit = self.config().limits.uploads_in_flight;
        let in_flight = self.inner.uploads.try_start(&ctx.tenant_id, limit).ok_or_else(|| {
            ServiceError::new(ErrorCode::RateLimited, format!("at most {limit} uploads at once; retry when one ends"))
                .retry_after(1)
        })?;
        let file_name = upload.file_name;
        Ok(Admission::New(AdmittedUpload { format, supplied_title, file_name, sha, bytes, _in_flight: in_flight }))
    }

    /// The tokens an upstream embedder will bill for the document's passages, by the real tokenizer.
    fn embedding_tokens_of(&self, title: &str, chunks: &[ChunkToIndex]) -> i64 {
        let passages = self.search().embedding_texts(title, chunks);
        let tokens: u64 = passages.iter().flatten().map(|t| tenantry_domain::tokens::count(t)).sum();
        i64::try_from(tokens).unwrap_or(i64::MAX)
    }

    /// Embeds the chunks off the runtime and puts each chunk's vectors in its row; the tokens the embedder
    /// reports.
    async fn embed_chunks(
        &self,
        title: &str,
        to_index: Vec<ChunkToIndex>,
        rows: &mut [NewChunk],
    ) -> ServiceResult<u64> {
        let (search, title) = (self.search().clone(), title.to_owned());
        let (vectors, tokens) = tokio::task::spawn_blocking(move || search.embed_document(&title, &to_index)).await??;
        for (chunk, vector) in rows.iter_mut().zip(vectors) {
            chunk.embedding = Some(vector);
        }
        Ok(tokens)
    }

    /// Once an upload is stored: vectors for a plan that changed meanwhile, this node's index caught up,
    /// the embedding job woken, the tenant's activation noted.
    async fn after_upload(&self, ctx: &TenantContext, doc_id: &DocumentId, embed_later: bool) -> ServiceResult<()> {
        if !ctx.index_vectors {
            self.vectors_if_plan_changed(ctx, doc_id).await?;
        }
        if let Err(e) = self.sync_index(&ctx.tenant_id).await {
            // Stored: the next question or the follower catches the index up.
            tracing::warn!(error = %e.detail, "document stored; the index will catch up");
        }
        if embed_later {
            // Its `embed_document` job is due now: this node's worker starts it without waiting to poll.
            self.wake_jobs();
        }
        self.document_added(&ctx.tenant_id).await;
        Ok(())
    }

    /// Parses and chunks an upload off the async runtime, one document per core at a time, within the
    /// service's and the plan's limits; past one, 413 with the reason.
    async fn parse_upload(
        &self,
        ctx: &TenantContext,
        format: Format,
        bytes: Vec<u8>,
    ) -> ServiceResult<(ParsedDocument, Vec<Chunk>, Vec<u8>)> {
        let opts = ChunkOptions {
            max_tokens: self.config().search.chunk_tokens,
            overlap_tokens: self.config().search.chunk_overlap_tokens,
        };
        let limits = Limits {
            stream_bytes: self.config().limits.stream_bytes,
            expanded_bytes: self.config().limits.expanded_bytes,
            text_bytes: ctx.plan.limits.document_text_bytes,
            stream_operators: self.config().limits.stream_operators,
            document_operators: self.config().limits.document_operators,
        };
        let (parsed, chunks, bytes) = self
            .inner
            .parsing
            .run(move || {
                let parsed = tenantry_ingest::parse(format, &bytes, &limits)?;
                let chunks = tenantry_ingest::chunk(&parsed, opts);
                Ok::<_, IngestError>((parsed, chunks, bytes))
            })
            .await?
            .map_err(ingest_error)?;
        let most = ctx.plan.limits.document_chunks;
        if chunks.len() as u64 > most {
            return Err(ServiceError::new(
                ErrorCode::PayloadTooLarge,
                format!("the document makes {} chunks; the plan allows {most} per document", chunks.len()),
            ));
        }
        Ok((parsed, chunks, bytes))
    }

    /// An upload whose tenant was erased while it ran stored no row; should anything have recreated the
    /// tenant's directory on this node after the erasure removed it, the directory goes again, whole, and
    /// the caller hears what its next request would (the account's keys are gone).
    async fn upload_outlived_its_tenant(&self, ctx: &TenantContext) -> ServiceError {
        if let Err(e) = self.drop_local_copies(&ctx.tenant_id).await {
            tracing::error!(error = %e.detail, "an erased tenant's files could not be removed");
        }
        tracing::info!("upload refused: the tenant was erased while it ran");
        ServiceError::new(
            ErrorCode::Unauthenticated,
            "this account was erased while the upload ran; nothing of it was kept",
        )
    }

    /// An upload that started on a plan without vectors can commit after a switch to a plan with them has
    /// listed the documents to embed; re-reading the tenant after the commit catches that: if the plan (or the
    /// pending plan) needs vectors now, this document is embedded here and its vectors announced to every node.
    async fn vectors_if_plan_changed(&self, ctx: &TenantContext, doc_id: &DocumentId) -> ServiceResult<()> {
        let Some(tenant) = self.store().tenant(&ctx.tenant_id).await? else { return Ok(()) };
        let needs = |plan: Option<&str>| plan.and_then(|p| self.catalog().plan(p)).is_some_and(|p| p.needs_vectors());
        if !needs(Some(&tenant.plan)) && !needs(tenant.pending_plan.as_deref()) {
            return Ok(());
        }
        tracing::info!(document_id = %doc_id, "plan changed during the upload: embedding the document now");
        self.embed_document_again(&ctx.tenant_id, doc_id).await
    }

    /// Chunks with vectors in the tenant's index (diagnostics: zero on a plan without vector retrieval).
    pub fn vector_count(&self, ctx: &TenantContext) -> ServiceResult<usize> {
        Ok(self.search().vector_count(ctx)?)
    }

    pub async fn list_documents(&self, ctx: &TenantContext) -> ServiceResult<Vec<DocumentView>> {
        Ok(self.store().documents(&ctx.tenant_id).await?.into_iter().map(|row| self.view(ctx, row)).collect())
    }

    /// A stored document as the tenant sees it: `indexing` while its plan searches vectors and the document
    /// has none of this service's embedder yet.
    fn view(&self, ctx: &TenantContext, row: DocumentRow) -> DocumentView {
        let indexing = ctx.index_vectors && row.embedder != self.search().embedder_name();
        DocumentView {
            document_id: row.id,
            title: row.title,
            content_type: row.content_type,
            bytes: row.bytes,
            chunks: row.chunks,
            created_at: row.created_at,
            status: if indexing { DocumentStatus::Indexing } else { DocumentStatus::Ready },
        }
    }

    /// The tenant's document. A malformed id, an unknown id and another tenant's id all answer the same 404.
    pub async fn get_document(&self, ctx: &TenantContext, raw_id: &str) -> ServiceResult<DocumentView> {
        let id = DocumentId::parse(raw_id).ok_or_else(|| ServiceError::not_found("document"))?;
        let row =
            self.store().document(&ctx.tenant_id, &id).await?.ok_or_else(|| ServiceError::not_found("document"))?;
        Ok(self.view(ctx, row))
    }

    /// Deletes the document from the database (with its negative ledger events), then catches the index up.
    pub async fn delete_document(&self, ctx: &TenantContext, raw_id: &str) -> ServiceResult<()> {
        let id = DocumentId::parse(raw_id).ok_or_else(|| ServiceError::not_found("document"))?;
        let row =
            self.store().document(&ctx.tenant_id, &id).await?.ok_or_else(|| ServiceError::not_found("document"))?;
        let events = level_events(ctx, &id, "delete", -1, -row.stored_bytes, self.clock().now());
        let actual = Amounts { documents: -1, storage_bytes: -row.stored_bytes, ..Amounts::default() };
        let settlement = self.settlement_for(ctx, None, actual);
        self.store().delete_document(&ctx.tenant_id, &id, &settlement, &events).await.map_err(|e| match e {
            tenantry_store::StoreError::NotFound => ServiceError::not_found("document"),
            other => other.into(),
        })?;
        if let Err(e) = self.sync_index(&ctx.tenant_id).await {
            // Deleted: retrieval ignores hits without a row; the next question or the follower catches up.
            tracing::warn!(error = %e.detail, "document deleted; the index will catch up");
        }
        tracing::info!(document_id = %id, "document deleted");
        Ok(())
    }
}

fn check_title(title: &str) -> ServiceResult<()> {
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ServiceError::validation(format!("title must be at most {MAX_TITLE_CHARS} characters")));
    }
    ServiceError::unless_plain_text("title", title)
}

/// Ledger events for a change in the documents and storage levels. Keyed by document and action so they can
/// only ever be recorded once.
fn level_events(
    ctx: &TenantContext,
    doc: &DocumentId,
    action: &str,
    documents: i64,
    bytes: i64,
    at: Timestamp,
) -> Vec<UsageEvent> {
    [(Meter::Documents, documents), (Meter::StorageBytes, bytes)]
        .into_iter()
        .map(|(meter, quantity)| UsageEvent {
            event_id: format!("{doc}:{action}:{}", meter.as_str()),
            tenant_id: ctx.tenant_id.clone(),
            request_id: ctx.request_id.to_string(),
            meter,
            model: String::new(),
            quantity,
            cost_micros: 0,
            at,
        })
        .collect()
}

/// The ledger event for the tokens an upstream embedding model billed: prompt tokens of that model, priced
/// at its input price, keyed by what was embedded (`{document}:upload`, `{operation}`) so it is recorded once.
pub(crate) fn embedding_event(
    ctx: &TenantContext,
    key: &str,
    model: &tenantry_domain::ModelSpec,
    tokens: u64,
    at: Timestamp,
) -> UsageEvent {
    UsageEvent {
        event_id: format!("{key}:embedding:{}", Meter::PromptTokens.as_str()),
        tenant_id: ctx.tenant_id.clone(),
        request_id: ctx.request_id.to_string(),
        meter: Meter::PromptTokens,
        model: model.name.clone(),
        quantity: tokens as i64,
        cost_micros: model.input_price.cost(tokens).0,
        at,
    }
}

/// Vectors after the embedder changed.
impl Services {
    /// Embeds every document of the tenant again, announcing the new vectors to every node's index.
    pub(crate) async fn embed_all_documents(&self, tenant_id: &TenantId) -> ServiceResult<()> {
        for doc in self.store().documents(tenant_id).await? {
            self.embed_document_again(tenant_id, &doc.id).await?;
        }
        self.sync_index(tenant_id).await
    }

    /// Embeds one stored document with this node's embedder and stores its vectors as a change of the
    /// document (every node's index replaces the document's vectors). A document deleted meanwhile is skipped.
    async fn embed_document_again(&self, tenant_id: &TenantId, id: &DocumentId) -> ServiceResult<()> {
        let Some(doc) = self.store().documents_to_index(tenant_id, std::slice::from_ref(id)).await?.pop() else {
            return Ok(());
        };
        let chunks: Vec<ChunkToIndex> = doc
            .chunks
            .into_iter()
            .map(|c| ChunkToIndex {
                chunk_id: c.id.to_string(),
                ordinal: u64::try_from(c.ordinal).unwrap_or(0),
                heading: c.heading,
                page: c.page.and_then(|p| u64::try_from(p).ok()),
                text: c.text,
            })
            .collect();
        let (search, title) = (self.search().clone(), doc.title);
        let (vectors, _) = tokio::task::spawn_blocking(move || search.embed_document(&title, &chunks)).await??;
        let embedder = self.search().embedder_name().to_owned();
        match self.store().set_document_vectors(tenant_id, id, &embedder, &vectors, true).await {
            Ok(()) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The `embed_document` job: the vectors of an upload answered before they were made
    /// (`TextEmbedder::chunks_in_request`), announced to every node's index; this node's index catches up at once.
    /// Moot when the document is gone, its tenant erased, or its vectors made already (the job ran before).
    pub(crate) async fn embed_uploaded(&self, tenant_id: &TenantId, id: &DocumentId) -> ServiceResult<()> {
        let Some(tenant) = self.store().tenant(tenant_id).await? else { return Ok(()) };
        if tenant.state == TenantState::Erased {
            return Ok(());
        }
        match self.store().document(tenant_id, id).await? {
            Some(doc) if doc.embedder != self.search().embedder_name() => {}
            _ => return Ok(()),
        }
        self.embed_document_again(tenant_id, id).await?;
        self.sync_index(tenant_id).await
    }

    /// At start: every tenant whose plan searches vectors and whose vectors are another embedder's (the
    /// configured embedder changed) gets a `reembed` job, unless one is already pending.
    pub(crate) async fn schedule_reembeds(&self) -> ServiceResult<()> {
        let now = self.clock().now();
        for tenant in self.store().tenants(None).await? {
            let needs = self.catalog().plan(&tenant.plan).is_some_and(|p| p.needs_vectors());
            if !needs || tenant.state == TenantState::Erased {
                continue;
            }
            if !self.search().vectors_from_another_embedder(&tenant.id)? {
                continue;
            }
            let pending = [JobState::Queued, JobState::Running];
            let mut already = false;
            for state in pending {
                let jobs = self.store().jobs(Some(state), Some(&tenant.id), 1_000).await?;
                already |= jobs.iter().any(|j| j.kind == "reembed");
            }
            if !already {
                tracing::info!(tenant_id = %tenant.id, "vectors of another embedder: re-embedding the documents");
                self.store().enqueue(&Job::Reembed { tenant_id: tenant.id.clone() }.at(now), now).await?;
            }
        }
        Ok(())
    }

    /// The `reembed` job: the tenant's documents embedded by the configured embedder, then the other
    /// embedder's set-aside vectors deleted. Until it finishes, BM25 carries `advanced` for the documents not
    /// yet embedded.
    pub(crate) async fn reembed(&self, tenant_id: &TenantId) -> ServiceResult<()> {
        let Some(tenant) = self.store().tenant(tenant_id).await? else { return Ok(()) };
        if tenant.state == TenantState::Erased {
            return Ok(());
        }
        self.embed_all_documents(tenant_id).await?;
        self.search().discard_stale_vectors(tenant_id)?;
        tracing::info!(tenant_id = %tenant_id, "documents re-embedded");
        Ok(())
    }
}

/// An upload past its admission: a new document, or a replay of one the tenant stored.
enum Admission {
    New(AdmittedUpload),
    Replay(DocumentRow),
}

/// An admitted upload, with one of the tenant's upload slots held until it is dropped.
struct AdmittedUpload {
    format: Format,
    supplied_title: Option<String>,
    file_name: Option<String>,
    sha: String,
    bytes: Vec<u8>,
    _in_flight: crate::work::Started,
}

/// The rows of a document's chunks (vectors to come) and what the search index takes of each.
fn chunk_rows(doc_id: &DocumentId, chunks: &[Chunk]) -> (Vec<NewChunk>, Vec<ChunkToIndex>) {
    let rows: Vec<NewChunk> = chunks
        .iter()
        .map(|c| NewChunk {
            id: ChunkId::new(doc_id, c.ordinal),
            ordinal: i64::from(c.ordinal),
            heading: c.heading.clone(),
            page: c.page.map(i64::from),
            text: c.text.clone(),
            embedding: None,
        })
        .collect();
    let to_index = chunks
        .iter()
        .zip(&rows)
        .map(|(c, row)| ChunkToIndex {
            chunk_id: row.id.to_string(),
            ordinal: u64::from(c.ordinal),
            heading: c.heading.clone(),
            page: c.page.map(u64::from),
            text: c.text.clone(),
        })
        .collect();
    (rows, to_index)
}

/// Past a limit, 413 with its reason; anything else the file's fault, 422.
fn ingest_error(e: IngestError) -> ServiceError {
    match e {
        IngestError::TooLarge(reason) => ServiceError::new(ErrorCode::PayloadTooLarge, reason),
        other => ServiceError::validation(format!("could not read the document: {other}")),
    }
}
