//! `tenantry bench embed`: how fast the local semantic model embeds what ingestion gives it. A text file is
//! parsed and chunked as an upload is (256-token chunks), each chunk becomes the texts the model embeds for
//! it (its 40-word windows under the title and heading, or with `--whole` the chunk itself), and those are
//! embedded in one call as an upload's are, several rounds. Reported: chunks per second, and the arithmetic
//! rate that is, from the model's shape and the tokens it read (`BertEmbedder::flops`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use tenantry_search::bert::BertEmbedder;
use tenantry_search::embed::TextEmbedder;
use tenantry_search::{embedding_texts, ChunkToIndex};

pub struct EmbedBench {
    pub model_dir: PathBuf,
    pub file: PathBuf,
    pub chunks: usize,
    pub rounds: usize,
    pub whole: bool,
}

pub fn embed(opts: EmbedBench) -> anyhow::Result<()> {
    let model = BertEmbedder::load(&opts.model_dir)?;
    let bytes = std::fs::read(&opts.file).with_context(|| opts.file.display().to_string())?;
    let parsed = tenantry_ingest::parse(tenantry_ingest::Format::Text, &bytes, &tenantry_ingest::Limits::default())?;
    let search = tenantry_domain::config::SearchConfig::default();
    let options =
        tenantry_ingest::ChunkOptions { max_tokens: search.chunk_tokens, overlap_tokens: search.chunk_overlap_tokens };
    let chunks: Vec<ChunkToIndex> = tenantry_ingest::chunk(&parsed, options)
        .into_iter()
        .take(opts.chunks)
        .enumerate()
        .map(|(i, c)| ChunkToIndex {
            chunk_id: format!("c{i}"),
            ordinal: u64::try_from(i).unwrap_or(u64::MAX),
            heading: c.heading,
            page: c.page.map(u64::from),
            text: c.text,
        })
        .collect();
    let title = parsed.title.unwrap_or_else(|| "Untitled".into());
    let windows = if opts.whole { None } else { model.window_words() };
    let texts: Vec<String> = embedding_texts(&title, &chunks, windows).into_iter().flatten().collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut tokens = 0;
    let mut flops = 0.0;
    for text in &refs {
        let n = model.tokens(text)?;
        tokens += n;
        flops += model.flops(n);
    }
    println!(
        "{} chunks of <= {} tokens -> {} texts, {} tokens, {:.2} GFLOP per round ({:.2} per chunk)",
        chunks.len(),
        search.chunk_tokens,
        refs.len(),
        tokens,
        flops / 1e9,
        flops / 1e9 / chunks.len().max(1) as f64
    );
    let mut seconds = Vec::new();
    for round in 1..=opts.rounds.max(1) {
        let started = Instant::now();
        let vectors = model.embed_batch(&refs)?;
        let elapsed = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            vectors.len() == refs.len(),
            "the model returned {} vectors for {} texts",
            vectors.len(),
            refs.len()
        );
        println!(
            "round {round}: {elapsed:.2} s, {:.1} chunks/s, {:.0} tokens/s, {:.1} GFLOP/s",
            chunks.len() as f64 / elapsed,
            tokens as f64 / elapsed,
            flops / elapsed / 1e9
        );
        seconds.push(elapsed);
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    println!(
        "median: {:.1} chunks/s, {:.1} GFLOP/s ({} threads)",
        chunks.len() as f64 / median,
        flops / median / 1e9,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    Ok(())
}
