//! Structure-aware chunking: blocks are cut into sentence-sized units, and units are packed into chunks of at
//! most `max_tokens` that never straddle a heading, with about `overlap_tokens` of the previous chunk's tail
//! repeated at the start of the next one in the same section.

use tenantry_domain::tokens;

use crate::ParsedDocument;

#[derive(Clone, Copy, Debug)]
pub struct ChunkOptions {
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self { max_tokens: 256, overlap_tokens: 32 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub ordinal: u32,
    pub heading: String,
    pub page: Option<u32>,
    pub text: String,
    pub tokens: usize,
}

fn count_tokens(text: &str) -> usize {
    tokens::count(text) as usize
}

struct Unit<'a> {
    heading: &'a str,
    page: Option<u32>,
    text: String,
    tokens: usize,
}

pub fn chunk(doc: &ParsedDocument, opts: ChunkOptions) -> Vec<Chunk> {
    let max = opts.max_tokens.max(16);
    let overlap = opts.overlap_tokens.min(max / 4);
    // Units leave room for the overlap so a chunk can always take at least one new unit.
    let unit_max = max - overlap;

    let mut units = Vec::new();
    for block in &doc.blocks {
        for sentence in sentences(&block.text) {
            for piece in split_to_fit(sentence, unit_max) {
                let tokens = count_tokens(&piece);
                units.push(Unit { heading: &block.heading, page: block.page, text: piece, tokens });
            }
        }
    }

    let mut chunks: Vec<Chunk> = Vec::new();
    let mut current: Vec<&Unit> = Vec::new();
    let mut fresh = 0; // units in `current` not carried over as overlap
    for unit in &units {
        let same_section = current.last().is_some_and(|u| u.heading == unit.heading);
        if !current.is_empty() && (!same_section || !fits(&current, unit, max)) {
            if fresh > 0 {
                chunks.push(assemble(&current, chunks.len()));
            }
            current = if same_section { tail(&current, overlap) } else { Vec::new() };
            fresh = 0;
        }
        current.push(unit);
        fresh += 1;
    }
    if fresh > 0 {
        chunks.push(assemble(&current, chunks.len()));
    }
    chunks
}

fn fits(current: &[&Unit], next: &Unit, max: usize) -> bool {
    let estimate: usize = current.iter().map(|u| u.tokens + 1).sum::<usize>() + next.tokens;
    if estimate <= max * 9 / 10 {
        return true;
    }
    // Near the limit, count exactly: joining can merge or split tokens at the seams.
    let mut text = join(current);
    text.push(' ');
    text.push_str(&next.text);
    count_tokens(&text) <= max
}

/// The last units of `current` whose tokens add up to at most `overlap`.
fn tail<'a>(current: &[&'a Unit<'a>], overlap: usize) -> Vec<&'a Unit<'a>> {
    let mut kept = Vec::new();
    let mut total = 0;
    for u in current.iter().rev() {
        if total + u.tokens + 1 > overlap {
            break;
        }
        total += u.tokens + 1;
        kept.push(*u);
    }
    kept.reverse();
    kept
}

fn join(units: &[&Unit]) -> String {
    units.iter().map(|u| u.text.as_str()).collect::<Vec<_>>().join(" ")
}

fn assemble(units: &[&Unit], ordinal: usize) -> Chunk {
    let text = join(units);
    Chunk {
        ordinal: ordinal as u32,
        heading: units.first().map(|u| u.heading.to_owned()).unwrap_or_default(),
        page: units.first().and_then(|u| u.page),
        tokens: count_tokens(&text),
        text,
    }
}

/// Splits after `.`, `?` or `!` followed by white space.
fn sentences(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text.trim();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let bytes = rest.as_bytes();
        let mut cut = rest.len();
        for i in 0..bytes.len().saturating_sub(1) {
            if matches!(bytes[i], b'.' | b'?' | b'!') && bytes[i + 1].is_ascii_whitespace() {
                cut = i + 1;
                break;
            }
        }
        let (sentence, tail) = rest.split_at(cut);
        rest = tail.trim_start();
        Some(sentence.trim())
    })
    .filter(|s| !s.is_empty())
}

/// A sentence longer than `max` tokens is cut into pieces on word boundaries; a single word longer than that
/// is cut on token boundaries. Linear in the sentence: words are added at their own token count (the
/// tokenizer's pieces start afresh at a space) and each piece is counted exactly once at the end.
fn split_to_fit(sentence: &str, max: usize) -> Vec<String> {
    if count_tokens(sentence) <= max {
        return vec![sentence.to_owned()];
    }
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut current_tokens = 0;
    for word in sentence.split_whitespace() {
        let alone = count_tokens(word);
        if alone > max {
            if !current.is_empty() {
                pieces.push(std::mem::take(&mut current));
            }
            cut_word(word, max, &mut pieces);
            continue;
        }
        let added = if current.is_empty() { alone } else { count_tokens(&format!(" {word}")) };
        if !current.is_empty() && current_tokens + added > max {
            pieces.push(std::mem::take(&mut current));
            current.push_str(word);
            current_tokens = alone;
            continue;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
        current_tokens += added;
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    // Where joining changed the tokens at a seam after all, the piece is re-cut counting every candidate.
    pieces.into_iter().flat_map(|p| if count_tokens(&p) <= max { vec![p] } else { split_exactly(&p, max) }).collect()
}

/// `split_to_fit` counting each candidate piece whole: exact, quadratic in the piece, so only for a piece
/// of about `max` tokens.
fn split_exactly(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let candidate = if current.is_empty() { word.to_owned() } else { format!("{current} {word}") };
        if count_tokens(&candidate) <= max {
            current = candidate;
            continue;
        }
        if !current.is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        if count_tokens(word) <= max {
            current = word.to_owned();
        } else {
            cut_word(word, max, &mut pieces);
        }
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// Cuts a word of more than `max` tokens into pieces of at most `max` tokens.
fn cut_word(word: &str, max: usize, pieces: &mut Vec<String>) {
    let mut rest = word;
    while !rest.is_empty() {
        let head = tokens::truncate(rest, max);
        if head.is_empty() {
            // Cannot happen for max >= 1, but never loop forever.
            pieces.push(rest.to_owned());
            break;
        }
        rest = &rest[head.len()..];
        pieces.push(head);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Block;
    use proptest::prelude::*;

    fn doc(blocks: &[(&str, &str)]) -> ParsedDocument {
        ParsedDocument {
            title: None,
            blocks: blocks.iter().map(|(h, t)| Block { heading: (*h).into(), page: None, text: (*t).into() }).collect(),
        }
    }

    #[test]
    fn chunks_do_not_straddle_headings() {
        let d = doc(&[("A", "One. Two."), ("B", "Three.")]);
        let c = chunk(&d, ChunkOptions::default());
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].heading.as_str(), c[0].text.as_str()), ("A", "One. Two."));
        assert_eq!((c[1].heading.as_str(), c[1].text.as_str()), ("B", "Three."));
        assert_eq!((c[0].ordinal, c[1].ordinal), (0, 1));
    }

    #[test]
    fn long_sections_overlap() {
        let text: String = (0..200).map(|i| format!("Sentence number {i} is here. ")).collect();
        let c = chunk(&doc(&[("", &text)]), ChunkOptions { max_tokens: 64, overlap_tokens: 16 });
        assert!(c.len() > 5);
        for pair in c.windows(2) {
            let last_sentence = pair[0].text.rsplit(". ").next().unwrap_or_default();
            assert!(pair[1].text.contains(last_sentence.trim_end_matches('.')), "{:?}", pair);
        }
    }

    #[test]
    fn one_giant_word_is_cut() {
        let word = "x".repeat(10_000);
        let c = chunk(&doc(&[("", &word)]), ChunkOptions { max_tokens: 50, overlap_tokens: 0 });
        assert!(c.iter().all(|c| c.tokens <= 50));
        assert_eq!(c.iter().map(|c| c.text.len()).sum::<usize>(), 10_000);
    }

    /// A megabyte in one "sentence" (no full stop), and long runs without a space: every chunk within the
    /// limit and, without overlap, exactly the text's words in order. (Before, this was quadratic: a 100 KB
    /// run took a minute, a megabyte of words 15 s.)
    #[test]
    fn a_megabyte_without_full_stops_is_chunked_whole() {
        let text = format!("{} {} {}", "word ".repeat(200_000), "a".repeat(300_000), "ünï✓".repeat(20_000));
        let max = 256;
        let c = chunk(&doc(&[("", &text)]), ChunkOptions { max_tokens: max, overlap_tokens: 0 });
        assert!(c.iter().all(|c| c.tokens <= max), "{:?}", c.iter().map(|c| c.tokens).max());
        let kept: String = c.iter().flat_map(|c| c.text.split_whitespace()).collect();
        let given: String = text.split_whitespace().collect();
        assert!(kept == given, "text lost or reordered");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn long_words_are_cut_without_loss(
            words in prop::collection::vec("[a-zé]{1,700}", 1..12),
            max in 16usize..120,
        ) {
            let text = words.join(" ");
            let chunks = chunk(&doc(&[("", &text)]), ChunkOptions { max_tokens: max, overlap_tokens: 0 });
            for c in &chunks {
                prop_assert!(c.tokens <= max, "chunk of {} tokens over {}", c.tokens, max);
            }
            let kept: String = chunks.iter().flat_map(|c| c.text.split_whitespace()).collect();
            prop_assert_eq!(kept, words.concat());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn no_text_lost_and_no_chunk_over_the_limit(
            paragraphs in prop::collection::vec("[a-zA-Z0-9 .,?!é]{0,400}", 1..8),
            max in 16usize..200,
            overlap in 0usize..64,
        ) {
            let blocks: Vec<(String, String)> =
                paragraphs.iter().enumerate().map(|(i, p)| (format!("h{}", i % 3), p.clone())).collect();
            let d = ParsedDocument {
                title: None,
                blocks: blocks.iter().map(|(h, t)| Block { heading: h.clone(), page: None, text: t.clone() }).collect(),
            };
            let chunks = chunk(&d, ChunkOptions { max_tokens: max, overlap_tokens: overlap });
            for c in &chunks {
                prop_assert!(c.tokens <= max.max(16), "chunk of {} tokens over {}", c.tokens, max);
                prop_assert_eq!(c.tokens, count_tokens(&c.text));
            }
            let all: String = chunks.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join(" ");
            let joined: String = all.split_whitespace().collect();
            for p in &paragraphs {
                for w in p.split_whitespace() {
                    prop_assert!(joined.contains(w), "word {w:?} lost");
                }
            }
        }
    }
}
