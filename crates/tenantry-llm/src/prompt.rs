//! The prompt: the tenant's system prompt, the retrieved evidence and the question, assembled into chat
//! messages that fit the model's context window. When something must give, evidence is cut, never the
//! question.

use std::collections::HashMap;
use std::sync::Mutex;

use tenantry_domain::{tokens, ModelSpec};

/// A retrieved passage offered to the model as evidence, numbered for citation (`[1]`, `[2]`…).
#[derive(Clone, Debug, PartialEq)]
pub struct Passage {
    pub number: usize,
    pub title: String,
    pub heading: String,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

/// A prompt ready for a provider. Immutable once built, so its token count is computed once.
#[derive(Clone, Debug)]
pub struct Prompt {
    system_prompt: String,
    question: String,
    /// The passages that fit, possibly the last one shortened.
    passages: Vec<Passage>,
    /// Tokens left for the answer.
    max_completion_tokens: u32,
    tokens: u64,
}

const INSTRUCTIONS: &str = "Answer the question using only the numbered context passages. Cite the passages \
you use as [n]. If the context does not contain the answer, say so.";

/// Tokens OpenAI's chat format adds per message, and once per reply.
const PER_MESSAGE_TOKENS: u64 = 3;
const REPLY_PRIMING_TOKENS: u64 = 3;

impl Prompt {
    /// Fits `passages` (best first) into `model`'s context window, keeping room for an answer of up to
    /// `max_completion_tokens`.
    pub fn build(
        model: &ModelSpec,
        system_prompt: &str,
        question: &str,
        passages: Vec<Passage>,
        max_completion_tokens: u32,
    ) -> Self {
        let mut prompt = Prompt {
            system_prompt: system_prompt.to_owned(),
            question: question.to_owned(),
            passages: Vec::new(),
            max_completion_tokens,
            tokens: 0,
        };
        let window = u64::from(model.context_window);
        let bare = prompt.count_tokens();
        let fixed = bare + u64::from(max_completion_tokens);
        let mut budget = window.saturating_sub(fixed);
        for p in passages {
            let cost = tokens::count(&render_passage(&p)) + 1;
            if cost <= budget {
                budget -= cost;
                prompt.passages.push(p);
                continue;
            }
            // Shorten the passage that does not fit, then stop.
            let header = tokens::count(&render_passage(&Passage { text: String::new(), ..p.clone() })) + 1;
            if budget > header + 16 {
                let text = tokens::truncate(&p.text, (budget - header) as usize);
                prompt.passages.push(Passage { text, ..p });
            }
            break;
        }
        prompt.tokens = if prompt.passages.is_empty() { bare } else { prompt.count_tokens() };
        prompt
    }

    pub fn question(&self) -> &str {
        &self.question
    }

    pub fn passages(&self) -> &[Passage] {
        &self.passages
    }

    pub fn max_completion_tokens(&self) -> u32 {
        self.max_completion_tokens
    }

    /// The chat messages sent to an OpenAI-compatible endpoint.
    pub fn messages(&self) -> Vec<Message> {
        vec![
            Message { role: "system", content: system_message(&self.system_prompt) },
            Message { role: "user", content: self.user_message() },
        ]
    }

    fn user_message(&self) -> String {
        let context: Vec<String> = self.passages.iter().map(render_passage).collect();
        format!("Context:\n{}\n\nQuestion: {}", context.join("\n\n"), self.question)
    }

    /// Prompt tokens as OpenAI counts a chat request: content plus per-message framing.
    pub fn token_count(&self) -> u64 {
        self.tokens
    }

    fn count_tokens(&self) -> u64 {
        system_message_tokens(&self.system_prompt)
            + tokens::count(&self.user_message())
            + 2 * PER_MESSAGE_TOKENS
            + REPLY_PRIMING_TOKENS
    }
}

/// The system message: the tenant's system prompt, then the citation instructions.
fn system_message(system_prompt: &str) -> String {
    let mut system = String::new();
    if !system_prompt.trim().is_empty() {
        system.push_str(system_prompt.trim());
        system.push_str("\n\n");
    }
    system.push_str(INSTRUCTIONS);
    system
}

/// Tokens of `system_message(system_prompt)`, remembered per system prompt: every request of a tenant sends
/// the same one, and encoding it was most of the tokenizer's work per request.
fn system_message_tokens(system_prompt: &str) -> u64 {
    /// Distinct system prompts remembered; past this the memory starts over.
    const REMEMBERED: usize = 4_096;
    static COUNTS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
    let lock = || COUNTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(n) = lock().as_ref().and_then(|counts| counts.get(system_prompt).copied()) {
        return n;
    }
    let n = tokens::count(&system_message(system_prompt));
    let mut counts = lock();
    let counts = counts.get_or_insert_with(HashMap::new);
    if counts.len() >= REMEMBERED {
        counts.clear();
    }
    counts.insert(system_prompt.to_owned(), n);
    n
}

fn render_passage(p: &Passage) -> String {
    let mut head = format!("[{}] {}", p.number, p.title);
    if !p.heading.is_empty() {
        head.push_str(" — ");
        head.push_str(&p.heading);
    }
    format!("{head}\n{}", p.text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry_domain::config::Config;

    fn model(window: u32) -> ModelSpec {
        let catalog = Config::builtin().catalog().expect("valid");
        let mut m = (**catalog.model("local-small").expect("exists")).clone();
        m.context_window = window;
        m
    }

    fn passage(n: usize, words: usize) -> Passage {
        Passage { number: n, title: format!("Doc {n}"), heading: String::new(), text: "evidence ".repeat(words) }
    }

    #[test]
    fn evidence_is_cut_to_fit_the_window_but_the_question_is_kept() {
        let question = "What is the refund window for annual plans?";
        let passages: Vec<_> = (1..=10).map(|n| passage(n, 200)).collect();
        let p = Prompt::build(&model(1024), "Be terse.", question, passages, 256);
        assert!(p.token_count() + 256 <= 1024, "{} tokens", p.token_count());
        assert!(!p.passages.is_empty() && p.passages.len() < 10);
        assert!(p.messages()[1].content.ends_with(question));
        assert!(p.messages()[0].content.starts_with("Be terse."));
    }

    #[test]
    fn everything_fits_in_a_large_window() {
        let passages: Vec<_> = (1..=3).map(|n| passage(n, 20)).collect();
        let p = Prompt::build(&model(8192), "", "q?", passages.clone(), 256);
        assert_eq!(p.passages, passages);
    }

    #[test]
    fn the_count_is_the_messages_own_count_whatever_is_remembered() {
        let counted = |p: &Prompt| {
            p.messages().iter().map(|m| tokens::count(&m.content) + PER_MESSAGE_TOKENS).sum::<u64>()
                + REPLY_PRIMING_TOKENS
        };
        for system in ["", "Be terse.", "Answer in French, citing every passage.", "Be terse."] {
            for passages in [vec![], (1..=3).map(|n| passage(n, 30)).collect()] {
                let p = Prompt::build(&model(8192), system, "How long do refunds take?", passages, 256);
                assert_eq!(p.token_count(), counted(&p), "system prompt {system:?}, {} passages", p.passages.len());
            }
        }
    }
}
