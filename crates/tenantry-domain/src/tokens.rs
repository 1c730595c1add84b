//! Token counting with a real BPE tokenizer (OpenAI's `cl100k_base`, shipped inside tiktoken-rs), used
//! wherever a provider does not report usage itself and for chunk sizing.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

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
    bpe().encode_ordinary(text).len() as u64
}

/// The longest prefix of `text` that fits in `max_tokens`, cut on a token boundary.
pub fn truncate(text: &str, max_tokens: usize) -> String {
    truncate_counted(text, max_tokens).0
}

/// `truncate`, and the prefix's token count, from one encoding when the text already fits.
pub fn truncate_counted(text: &str, max_tokens: usize) -> (String, u64) {
    let tokens = bpe().encode_ordinary(text);
    if tokens.len() <= max_tokens {
        return (text.to_owned(), tokens.len() as u64);
    }
    let cut = cut(&tokens, max_tokens);
    let n = count(&cut);
    (cut, n)
}

fn cut(tokens: &[u32], max_tokens: usize) -> String {
    let mut keep = max_tokens;
    // A cut inside a multi-byte character does not decode; step back until it does.
    while keep > 0 {
        if let Ok(s) = bpe().decode(tokens[..keep].to_vec()) {
            return s;
        }
        keep -= 1;
    }
    String::new()
}

#[cfg(test)]
mod tests {
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
}
