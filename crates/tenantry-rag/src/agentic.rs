//! `agentic` retrieval: plan, retrieve per step, merge evidence so every step is represented.
//!
//! 1. Plan: the question is split into at most `MAX_STEPS` self-contained sub-questions (several questions in
//!    one message; "A and B" / "A versus B" where both sides carry content words), by rule: no model call,
//!    no tokens, no failure. Where the plan allows it and the tenant's model is hosted, the model writes the
//!    plan instead (`crate::rewrite_question`), metered to the tenant; the rule is its fallback.
//! 2. Retrieve: each step runs hybrid retrieval (`advanced`), and the whole question runs once more.
//! 3. Merge: reciprocal-rank fusion over all lists, then the best passage of each step is guaranteed a place
//!    in the final `top_k`, so one sub-question's vocabulary cannot crowd out another's evidence.
//!
//! The answer is then generated once over the merged evidence, metered like any other query: one query and
//! its tokens. Steps and retrievals are bounded by `MAX_STEPS`.

use tenantry_domain::TenantContext;

use crate::hybrid;
use crate::{Hit, RagError, Retriever};

/// Most sub-questions a plan may have.
pub const MAX_STEPS: usize = 3;
/// Content words a sub-question needs to stand alone.
const MIN_CONTENT_WORDS: usize = 2;

const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "do", "does", "did", "what", "which", "who", "whom", "how",
    "when", "where", "why", "of", "to", "in", "on", "for", "with", "by", "at", "from", "and", "or", "it", "its",
    "this", "that", "these", "those", "there", "can", "could", "should", "would", "will", "i", "we", "you", "our",
    "your", "my", "me", "us", "much", "many",
];

/// The steps of a question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<String>,
}

pub fn plan(question: &str) -> Plan {
    let mut steps: Vec<String> = Vec::new();
    for sentence in question.split_inclusive('?').map(str::trim).filter(|s| !s.is_empty()) {
        for part in split_conjunction(sentence) {
            if steps.len() < MAX_STEPS && !steps.contains(&part) {
                steps.push(part);
            }
        }
    }
    if steps.is_empty() {
        steps.push(question.trim().to_owned());
    }
    Plan { steps }
}

fn content_words(text: &str) -> usize {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !FUNCTION_WORDS.contains(&w.to_lowercase().as_str()))
        .count()
}

/// "What is X and how does Y work?" → ["What is X?", "how does Y work?"], when both halves stand alone.
fn split_conjunction(sentence: &str) -> Vec<String> {
    let lower = sentence.to_lowercase();
    for joiner in [" and ", " versus ", " vs. ", " vs ", " compared to ", " as well as "] {
        if let Some(at) = lower.find(joiner) {
            let (left, right) = (sentence[..at].trim(), sentence[at + joiner.len()..].trim());
            if content_words(left) >= MIN_CONTENT_WORDS && content_words(right) >= MIN_CONTENT_WORDS {
                let left = if left.ends_with('?') { left.to_owned() } else { format!("{left}?") };
                let mut parts = vec![left];
                parts.extend(split_conjunction(right));
                return parts;
            }
        }
    }
    vec![sentence.to_owned()]
}

/// Retrieves the whole question and, unless the plan is that question alone, each step; then merges them.
pub(crate) async fn retrieve(
    ctx: &TenantContext,
    retriever: &dyn Retriever,
    question: &str,
    plan: &Plan,
    top_k: usize,
) -> Result<Vec<Hit>, RagError> {
    let mut lists = Vec::with_capacity(plan.steps.len() + 1);
    lists.push(hybrid::retrieve(ctx, retriever, question, top_k).await?);
    let the_question_alone = matches!(&plan.steps[..], [step] if step.trim() == question.trim());
    if !the_question_alone {
        for step in &plan.steps {
            lists.push(hybrid::retrieve(ctx, retriever, step, top_k).await?);
        }
    }
    Ok(merge(&lists, top_k))
}

/// Fuses the lists, then makes sure each step list's best hit is in the first `top_k`.
fn merge(lists: &[Vec<Hit>], top_k: usize) -> Vec<Hit> {
    let fused = hybrid::fuse(lists);
    let mut chosen: Vec<Hit> = Vec::with_capacity(top_k);
    for list in lists.iter().skip(1) {
        if let Some(best) = list.first() {
            if chosen.len() < top_k && !chosen.iter().any(|h| h.chunk_id == best.chunk_id) {
                if let Some(hit) = fused.iter().find(|h| h.chunk_id == best.chunk_id) {
                    chosen.push(hit.clone());
                }
            }
        }
    }
    for hit in hybrid::diversify(fused, top_k + chosen.len()) {
        if chosen.len() == top_k {
            break;
        }
        if !chosen.iter().any(|h| h.chunk_id == hit.chunk_id) {
            chosen.push(hit);
        }
    }
    chosen.sort_by(|a, b| b.score.total_cmp(&a.score));
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compound_questions_become_steps() {
        assert_eq!(
            plan("What is the refund window and which carrier ships our orders?").steps,
            ["What is the refund window?", "which carrier ships our orders?"]
        );
        assert_eq!(
            plan("How long do refunds take? Who pays for return shipping?").steps,
            ["How long do refunds take?", "Who pays for return shipping?"]
        );
        assert_eq!(
            plan("Compare the pro plan versus the starter plan").steps,
            ["Compare the pro plan?", "the starter plan"]
        );
    }

    #[test]
    fn simple_questions_stay_whole_and_plans_are_bounded() {
        assert_eq!(plan("Is salt and pepper included?").steps, ["Is salt and pepper included?"]);
        assert_eq!(plan("refunds").steps, ["refunds"]);
        let many = "What is a? What is bb cc? What is dd ee? What is ff gg? What is hh ii?";
        assert_eq!(plan(many).steps.len(), MAX_STEPS);
    }
}
