//! Parses a PDF and prints what ingestion made of it, with the time taken:
//! `cargo run --release -p tenantry-ingest --example parse_pdf -- FILE.pdf [--blocks]`.

use std::time::Instant;

use tenantry_ingest::{parse, Format, Limits};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: parse_pdf FILE.pdf [--blocks]")?;
    let show_blocks = args.next().as_deref() == Some("--blocks");
    let bytes = std::fs::read(&path)?;

    let started = Instant::now();
    let doc = parse(Format::Pdf, &bytes, &Limits::default())?;
    let elapsed = started.elapsed();

    if show_blocks {
        for block in &doc.blocks {
            println!("p{} [{}] {}", block.page.unwrap_or(0), block.heading, block.text);
        }
    }
    let pages = doc.blocks.iter().filter_map(|b| b.page).max().unwrap_or(0);
    let chars: usize = doc.blocks.iter().map(|b| b.text.chars().count()).sum();
    let ms = elapsed.as_secs_f64() * 1000.0;
    println!(
        "{path}: title={:?} pages={pages} blocks={} chars={chars} elapsed_ms={ms:.0} pages_per_s={:.0}",
        doc.title,
        doc.blocks.len(),
        f64::from(pages) / elapsed.as_secs_f64()
    );
    Ok(())
}
