//! Token counting with a real BPE tokenizer (OpenAI's `cl100k_base`, shipped inside tiktoken-rs), used
//! wherever a provider does not report usage itself and for chunk sizing.
//!
//! The tokenizer's byte-pair merge takes time quadratic in the length of one pre-tokenized piece, and a run
//! of letters without white space is one piece: 100 KB of `a` in one upload took over a minute of CPU, 1 MB
//! would take hours. So text is encoded in segments, cut inside any run of non-white-space longer than
//! [`MAX_RUN`] bytes. Text without such a run is one segment and is counted exactly as the tokenizer counts
//! it; inside a cut run the count may differ from the tokenizer's by a token per cut, which only strings of
//! hundreds of bytes without a space (encoded blobs, not prose) ever see.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

/// The longest run of non-white-space encoded as one piece, in bytes.
pub const MAX_RUN: usize = 256;

fn bpe() -> &'static CoreBPE {
    static BPE: OnceLock<CoreBPE> = OnceLock::new();
    #[allow(clippy::expect_used)]
    // the vocabulary is compiled in; failing to load it is a build defect
    BPE.get_or_init(|| tiktoken_rs::cl100k_base().expect("cl100k_base vocabulary is embedded"))
}

/// Loads the vocabulary now rather than on the first request.
pub fn warm_up() {
    let _ = bpe();
}

pub fn count(text: &str) -> u64 {
    segments(text).map(|s| bpe().encode_ordinary(s).len() as u64).sum()
}

/// The longest prefix of `text` that fits in `max_tokens`, cut on a token boundary.
pub fn truncate(text: &str, max_tokens: usize) -> String {
    truncate_counted(text, max_tokens).0
}

/// `truncate`, and the prefix's token count. Segments are encoded only until the budget is spent, so cutting
/// the head off a long text costs what the head costs.
pub fn truncate_counted(text: &str, max_tokens: usize) -> (String, u64) {
    let mut used = 0;
    let mut offset = 0;
    for segment in segments(text) {
        let tokens = bpe().encode_ordinary(segment);
        if used + tokens.len() > max_tokens {
            let (head, n) = cut(&tokens, max_tokens - used);
            return (format!("{}{head}", &text[..offset]), (used + n) as u64);
        }
        used += tokens.len();
        offset += segment.len();
    }
    (text.to_owned(), used as u64)
}

/// The text of the longest prefix of `tokens` that decodes (a cut inside a multi-byte character does not)
/// and encodes again to at most `max_tokens`, with that count.
fn cut(tokens: &[u32], max_tokens: usize) -> (String, usize) {
    let mut keep = max_tokens.min(tokens.len());
    while keep > 0 {
        if let Ok(s) = bpe().decode(tokens[..keep].to_vec()) {
            let n = bpe().encode_ordinary(&s).len();
            if n <= max_tokens {
                return (s, n);
            }
        }
        keep -= 1;
    }
    (String::new(), 0)
}

/// `text` in the pieces it is encoded in: whole, unless a run of non-white-space is longer than `MAX_RUN`
/// bytes, which is cut after every `MAX_RUN` bytes (on a character boundary).
fn segments(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (head, tail) = rest.split_at(next_cut(rest).unwrap_or(rest.len()));
        rest = tail;
        Some(head)
    })
}

/// Where `text`'s first segment ends: before the character that makes a run of non-white-space longer than
/// `MAX_RUN` bytes.
fn next_cut(text: &str) -> Option<usize> {
    let mut run_start = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            run_start = None;
            continue;
        }
        let start = *run_start.get_or_insert(i);
        if i + c.len_utf8() - start > MAX_RUN {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn counts_real_tokens() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello world"), 2);
        assert!(count("Refunds are issued within 14 days.") >= 7);
    }

    #[test]
    fn truncates_on_token_boundaries() {
        let t = truncate("one two three four five", 2);
        assert_eq!(t, "one two");
        assert_eq!(truncate("short", 10), "short");
        assert!(count(&truncate("héllo wörld ünïcode ✓✓✓", 3)) <= 3);
    }

    /// Two megabytes without a space: before segments this did not finish in hours.
    #[test]
    fn a_long_run_without_white_space_is_counted_and_cut() {
        let blob = "a".repeat(2_000_000);
        let n = count(&blob);
        assert!((2_000_000 / 64..2_000_000).contains(&(n as usize)), "{n}");
        let (head, used) = truncate_counted(&blob, 1_000);
        assert!(blob.starts_with(&head) && !head.is_empty());
        assert!(used <= 1_000 && used == count(&head), "{used}");
        let mixed = format!("{} {} ✓", "é".repeat(5_000), "b".repeat(700));
        assert!(segments(&mixed).all(|s| !s.is_empty()));
        assert_eq!(segments(&mixed).collect::<String>(), mixed, "segments cover the text");
    }

    proptest! {
        /// Text whose runs are at most `MAX_RUN` bytes is one segment, counted exactly as the tokenizer does.
        #[test]
        fn ordinary_text_is_counted_exactly(words in proptest::collection::vec("[a-zA-Zé0-9,.!?']{1,30}", 0..80)) {
            let text = words.join(" ");
            prop_assert_eq!(segments(&text).count(), usize::from(!text.is_empty()));
            prop_assert_eq!(count(&text), bpe().encode_ordinary(&text).len() as u64);
        }

        /// A cut is a prefix of the text within the budget, whatever the text.
        #[test]
        fn a_cut_is_a_prefix_within_the_budget(text in "[a-zé✓ ]{0,900}", max in 0usize..120) {
            let (head, used) = truncate_counted(&text, max);
            prop_assert!(text.starts_with(&head));
            prop_assert!(used as usize <= max || head == text);
            prop_assert_eq!(used, count(&head));
        }
    }
}
