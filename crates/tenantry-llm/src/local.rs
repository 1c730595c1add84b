//! The built-in offline model: an extractive answerer. It does not generate language; it quotes the evidence
//! sentences that share the most content words with the question, each with its citation marker, and says
//! plainly when nothing matches. Usage is counted with the same tokenizer as for a hosted model, over the
//! same prompt a hosted model would have received, so quotas and prices behave identically.

use std::collections::HashSet;

use async_trait::async_trait;
use tenantry_domain::{tokens, ModelSpec};

use crate::prompt::{Prompt, ResponseFormat};
use crate::{FinishReason, Generation, LlmError, Provider, TokenUsage};

pub const NO_ANSWER: &str = "I could not find an answer to that in your documents.";

#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExtractive;

#[async_trait]
impl Provider for LocalExtractive {
    /// Honours what an extractive answerer can: `max_tokens` (cut, `length`), `stop` (cut before the first
    /// stop sequence) and `response_format` `json_object` (`{"answer": …}`). The caller refuses the rest
    /// (`Options::unsupported_offline`).
    async fn generate(&self, model: &ModelSpec, prompt: &Prompt) -> Result<Generation, LlmError> {
        let options = prompt.options();
        let mut text = answer(prompt, model.answer_sentences as usize);
        if options.response_format == ResponseFormat::JsonObject {
            text = serde_json::json!({ "answer": text }).to_string();
        }
        if let Some(at) = options.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(at);
        }
        let limit = prompt.max_completion_tokens() as usize;
        let (cut, completion_tokens) = tokens::truncate_counted(&text, limit);
        let finish_reason = if cut.len() < text.len() { FinishReason::Length } else { FinishReason::Stop };
        let usage = TokenUsage { prompt_tokens: prompt.token_count(), completion_tokens };
        Ok(Generation { text: cut, usage, model: model.name.clone(), finish_reason, tool_calls: None })
    }
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i", "in", "is", "it",
    "of", "on", "or", "that", "the", "this", "to", "was", "what", "when", "where", "which", "who", "why", "will",
    "with", "you", "your", "my", "we", "our", "there", "their", "they", "long",
];

/// Lower-cased content words with a crude plural/tense strip, enough to match "refunds" with "refund".
fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .map(|w| {
            for suffix in ["ing", "ed", "es", "s"] {
                if w.len() > suffix.len() + 3 {
                    if let Some(stem) = w.strip_suffix(suffix) {
                        return stem.to_owned();
                    }
                }
            }
            w
        })
        .collect()
}

fn answer(prompt: &Prompt, max_sentences: usize) -> String {
    let wanted: HashSet<String> = terms(prompt.question()).into_iter().collect();
    // (score, passage rank, position, number, sentence)
    let mut candidates: Vec<(usize, usize, usize, usize, &str)> = Vec::new();
    for (rank, p) in prompt.passages().iter().enumerate() {
        for (pos, sentence) in split_sentences(&p.text).into_iter().enumerate() {
            let found: HashSet<String> = terms(sentence).into_iter().filter(|t| wanted.contains(t)).collect();
            if !found.is_empty() {
                candidates.push((found.len(), rank, pos, p.number, sentence));
            }
        }
    }
    if candidates.is_empty() {
        return NO_ANSWER.to_owned();
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    candidates.truncate(max_sentences.max(1));
    // Read in document order: by passage rank, then position.
    candidates.sort_by(|a, b| a.1.cmp(&b.1).then(a.2.cmp(&b.2)));
    candidates.iter().map(|(_, _, _, number, s)| format!("{} [{number}]", s.trim())).collect::<Vec<_>>().join(" ")
}

/// Sentences end at `.`, `?` or `!` followed by white space, so "TLS 1.3" and "e.g." inside a word stay whole.
fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for i in 0..bytes.len() {
        let ends = matches!(bytes[i], b'.' | b'?' | b'!') && bytes.get(i + 1).is_none_or(|b| b.is_ascii_whitespace());
        if ends {
            out.push(text[start..=i].trim());
            start = i + 1;
        }
    }
    out.push(text[start..].trim());
    out.retain(|s| s.len() > 1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::Passage;
    use tenantry_domain::config::Config;

    fn model() -> ModelSpec {
        let catalog = Config::builtin().catalog().expect("valid");
        (**catalog.model("local-small").expect("exists")).clone()
    }

    #[tokio::test]
    async fn quotes_the_matching_sentence_with_its_citation() -> Result<(), LlmError> {
        let passages = vec![
            Passage {
                number: 1,
                title: "Shipping".into(),
                heading: String::new(),
                text: "We ship worldwide. Delivery takes a week.".into(),
            },
            Passage {
                number: 2,
                title: "Refunds".into(),
                heading: String::new(),
                text: "Refunds are issued within 14 days. Keep your receipt.".into(),
            },
        ];
        let m = model();
        let prompt = Prompt::build(&m, "", "How long do refunds take?", passages, 256).expect("fits");
        let g = LocalExtractive.generate(&m, &prompt).await?;
        assert!(g.text.contains("Refunds are issued within 14 days. [2]"), "{}", g.text);
        assert!(!g.text.contains("ship"), "{}", g.text);
        assert_eq!(g.model, "local-small");
        assert_eq!(g.usage.prompt_tokens, prompt.token_count());
        assert_eq!(g.usage.completion_tokens, tokens::count(&g.text));
        Ok(())
    }

    #[tokio::test]
    async fn honours_stop_max_tokens_and_json_object() -> Result<(), LlmError> {
        let passages = vec![Passage {
            number: 1,
            title: "Refunds".into(),
            heading: String::new(),
            text: "Refunds are issued within 14 days of purchase by the original payment method.".into(),
        }];
        let m = model();
        let build = |options: crate::Options, max_tokens: u32| {
            crate::Prompt::build_chat(
                &m,
                "",
                crate::Conversation::question("How long do refunds take?"),
                passages.clone(),
                max_tokens,
                options,
            )
            .expect("fits")
        };
        let whole = LocalExtractive.generate(&m, &build(crate::Options::default(), 256)).await?;
        assert_eq!(whole.finish_reason, FinishReason::Stop);

        let stop = crate::Options { stop: vec!["14".into()], ..crate::Options::default() };
        let g = LocalExtractive.generate(&m, &build(stop, 256)).await?;
        assert_eq!(g.text, "Refunds are issued within ");
        assert_eq!(g.finish_reason, FinishReason::Stop);

        let g = LocalExtractive.generate(&m, &build(crate::Options::default(), 3)).await?;
        assert_eq!((g.finish_reason, g.usage.completion_tokens), (FinishReason::Length, 3));
        assert!(whole.text.starts_with(&g.text));

        let json = crate::Options { response_format: ResponseFormat::JsonObject, ..crate::Options::default() };
        let g = LocalExtractive.generate(&m, &build(json, 256)).await?;
        let parsed: serde_json::Value = serde_json::from_str(&g.text).expect("a JSON object");
        assert_eq!(parsed["answer"], whole.text.as_str());
        Ok(())
    }

    #[test]
    fn sentences_keep_decimal_numbers() {
        assert_eq!(
            split_sentences("Uses TLS 1.3 now. Accrue 1.5 days! Ok?"),
            ["Uses TLS 1.3 now.", "Accrue 1.5 days!", "Ok?"]
        );
    }

    #[tokio::test]
    async fn says_so_when_nothing_matches() -> Result<(), LlmError> {
        let m = model();
        let prompt = Prompt::build(&m, "", "Who won the match?", Vec::new(), 256).expect("fits");
        assert_eq!(LocalExtractive.generate(&m, &prompt).await?.text, NO_ANSWER);
        Ok(())
    }
}
