//! The prompt: the tenant's system prompt, the client's own instructions and earlier turns, the retrieved
//! evidence and the question, assembled into chat messages that fit the model's context window, with the
//! generation options the client asked for. When something must give, the oldest turns go first, then
//! evidence; never the tenant's prompt, the client's instructions or the question.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Map, Value};
use tenantry_domain::{tokens, ModelSpec};

/// A retrieved passage offered to the model as evidence, numbered for citation (`[1]`, `[2]`…).
#[derive(Clone, Debug, PartialEq)]
pub struct Passage {
    pub number: usize,
    pub title: String,
    pub heading: String,
    pub text: String,
}

/// Who wrote a message of the client's conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `system` or `developer`: the client's instructions, sent after the tenant's.
    System,
    User,
    Assistant,
    /// A tool's result, answering an assistant's tool call.
    Tool,
}

/// One message of the client's conversation: the JSON sent upstream (role, content, and where present
/// `name`, `tool_calls`, `tool_call_id`) and its tokens as counted.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub role: Role,
    message: Value,
    tokens: u64,
}

impl Turn {
    /// A message with this text and the fields of OpenAI's message object that travel with it.
    pub fn new(role: Role, text: &str, extra: Map<String, Value>) -> Self {
        let wire_role = match role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        let mut message = Map::new();
        message.insert("role".into(), json!(wire_role));
        // An assistant message that only calls tools has null content, as OpenAI sends it.
        let content = if text.is_empty() && extra.contains_key("tool_calls") { Value::Null } else { json!(text) };
        message.insert("content".into(), content);
        let extra_tokens: u64 = extra.values().map(|v| tokens::count(&v.to_string())).sum();
        message.extend(extra);
        Self { role, message: Value::Object(message), tokens: turn_tokens(text) + extra_tokens + PER_MESSAGE_TOKENS }
    }

    pub fn text(&self) -> &str {
        self.message["content"].as_str().unwrap_or("")
    }
}

/// A client's conversation around its last question: its instructions, the turns before the question, the
/// question, and what followed it (an assistant's tool calls and the tools' results, in a tool loop).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conversation {
    pub instructions: Vec<Turn>,
    pub history: Vec<Turn>,
    pub question: String,
    pub after: Vec<Turn>,
}

impl Conversation {
    /// A single question, no history.
    pub fn question(question: &str) -> Self {
        Self { question: question.to_owned(), ..Self::default() }
    }

    /// The question as retrieval should read it: a follow-up that leans on an earlier turn ("and its
    /// headquarters?") is read together with the previous question and the start of the answer to it, where
    /// its subject was named, so the subject is searched for too.
    pub fn standalone_question(&self) -> String {
        let Some(asked) = self.history.iter().rposition(|t| t.role == Role::User) else {
            return self.question.clone();
        };
        if !is_follow_up(&self.question) {
            return self.question.clone();
        }
        let answered = self.history[asked..].iter().find(|t| t.role == Role::Assistant).map_or("", Turn::text);
        let answer_start: Vec<&str> = answered.split_whitespace().take(FOLLOW_UP_ANSWER_WORDS).collect();
        format!("{} {} {}", self.history[asked].text(), answer_start.join(" "), self.question)
    }
}

/// Words of the previous answer read with a follow-up: enough to hold the subject it named.
const FOLLOW_UP_ANSWER_WORDS: usize = 40;

/// Words by which a question points back at an earlier turn instead of naming its subject.
const BACK_REFERENCES: &[&str] = &[
    "it", "its", "it's", "they", "them", "their", "theirs", "this", "that", "these", "those", "he", "him", "his",
    "she", "her", "hers", "there", "one", "ones", "same", "former", "latter", "above", "else", "also",
];

/// Whether `question` leans on what came before: it points back ("its", "that one") or is too short to
/// stand alone ("why?", "and in 2020?").
fn is_follow_up(question: &str) -> bool {
    let words: Vec<String> = question
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    words.len() <= 3 || words.iter().any(|w| BACK_REFERENCES.contains(&w.as_str()))
}

/// What the answer must look like.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ResponseFormat {
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching the client's schema (`response_format.json_schema`).
    JsonSchema,
}

/// How the client asked the answer to be generated: OpenAI's parameters, validated by the caller, passed to
/// an OpenAI-compatible upstream as they came; the offline model honours what it can (`stop`,
/// `response_format` `json_object`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    /// The parameters as sent upstream (`temperature`, `top_p`, `stop`, `seed`, penalties, `logprobs`,
    /// `response_format`, `tools`, `tool_choice`, `parallel_tool_calls`, `user`, …).
    pub upstream: Map<String, Value>,
    pub stop: Vec<String>,
    pub response_format: ResponseFormat,
}

impl Options {
    /// The first parameter the offline model cannot honour, if any.
    pub fn unsupported_offline(&self) -> Option<&'static str> {
        if self.response_format == ResponseFormat::JsonSchema {
            return Some("response_format");
        }
        ["tools", "tool_choice", "parallel_tool_calls", "logprobs", "top_logprobs", "logit_bias"]
            .into_iter()
            .find(|p| self.upstream.get(*p).is_some_and(|v| !v.is_null() && *v != json!(false)))
    }

    /// Tokens the tool definitions add to the prompt.
    fn tokens(&self) -> u64 {
        self.upstream.get("tools").map_or(0, |tools| tokens::count(&tools.to_string()))
    }
}

/// The conversation's pinned part does not fit in the model's window, even without history or evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "this model's maximum context length is {window} tokens; the messages and the answer's {completion} \
tokens need {needed}"
)]
pub struct ContextLengthExceeded {
    pub window: u32,
    pub needed: u64,
    pub completion: u32,
}

/// A prompt ready for a provider. Immutable once built, so its token count is computed once.
#[derive(Clone, Debug)]
pub struct Prompt {
    system_prompt: String,
    instructions: Vec<Turn>,
    /// The turns that fit, the most recent ones.
    history: Vec<Turn>,
    question: String,
    after: Vec<Turn>,
    /// The passages that fit, possibly the last one shortened.
    passages: Vec<Passage>,
    /// Tokens left for the answer.
    max_completion_tokens: u32,
    options: Options,
    task: Task,
    tokens: u64,
}

/// What a prompt asks of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Task {
    /// Answer the question from the evidence, in the conversation.
    Answer,
    /// Restate the last question of a conversation so that it stands alone, for retrieval.
    Standalone,
    /// Write search queries for the question, for retrieval.
    SearchQueries(Rewrite),
}

/// How a question is rewritten for retrieval (`Prompt::search_queries`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// Other wordings of the same question, in the words a document would use (multi-query).
    Wordings,
    /// The sub-questions that must be looked up to answer it, one query each (a plan).
    Plan,
}

impl Task {
    /// The tokens of `helper_instructions`, counted once per task.
    fn helper_instruction_tokens(self) -> u64 {
        static COUNTED: [std::sync::OnceLock<u64>; 3] = [const { std::sync::OnceLock::new() }; 3];
        let slot = match self {
            Self::Answer => return 0,
            Self::Standalone => 0,
            Self::SearchQueries(Rewrite::Wordings) => 1,
            Self::SearchQueries(Rewrite::Plan) => 2,
        };
        *COUNTED[slot].get_or_init(|| self.helper_instructions().map_or(0, tokens::count))
    }

    /// The system message of a task that serves retrieval, which sees neither the tenant's prompt nor passages.
    fn helper_instructions(self) -> Option<&'static str> {
        match self {
            Self::Answer => None,
            Self::Standalone => Some(STANDALONE_INSTRUCTIONS),
            Self::SearchQueries(Rewrite::Wordings) => Some(WORDINGS_INSTRUCTIONS),
            Self::SearchQueries(Rewrite::Plan) => Some(PLAN_INSTRUCTIONS),
        }
    }
}

const INSTRUCTIONS: &str = "Answer the question using only the numbered context passages. Cite the passages \
you use as [n]. If the context does not contain the answer, say so.";

const STANDALONE_INSTRUCTIONS: &str = "Rewrite the user's last question so that it can be understood \
without the conversation: replace every word that refers to something earlier (it, its, they, that one, \
there) with what it refers to. Keep the question's language and meaning, do not answer it, and reply with the \
rewritten question only.";

const WORDINGS_INSTRUCTIONS: &str = "Write up to three search queries that would find the passages of a \
document that answer the user's question. Say what the user describes in everyday words the way a formal document \
(a contract, a manual, a regulation, a policy) would say it. Do not answer the question. Reply with one query per \
line and nothing else.";

const PLAN_INSTRUCTIONS: &str = "Break the user's question into the separate things that must be looked up in \
the documents to answer it, at most three, and write one self-contained search query for each (one query when \
the question asks one thing), in the words a formal document would use. Do not answer the question. Reply with \
one query per line and nothing else.";

/// The most tokens the search queries of one question may take.
pub const SEARCH_QUERIES_MAX_TOKENS: u32 = 160;

/// Turns of the conversation a standalone question is written from (the most recent), and the tokens kept of
/// each: enough to name what the question refers to.
const STANDALONE_TURNS: usize = 6;
const STANDALONE_TURN_TOKENS: usize = 200;

/// The most tokens a restated question may take.
pub const STANDALONE_MAX_TOKENS: u32 = 128;

/// Tokens OpenAI's chat format adds per message, and once per reply.
const PER_MESSAGE_TOKENS: u64 = 3;
const REPLY_PRIMING_TOKENS: u64 = 3;

impl Prompt {
    /// Fits `passages` (best first) into `model`'s context window with one question and no history.
    pub fn build(
        model: &ModelSpec,
        system_prompt: &str,
        question: &str,
        passages: Vec<Passage>,
        max_completion_tokens: u32,
    ) -> Result<Self, ContextLengthExceeded> {
        Self::build_chat(
            model,
            system_prompt,
            Conversation::question(question),
            passages,
            max_completion_tokens,
            Options::default(),
        )
    }

    /// Fits the conversation and `passages` (best first) into `model`'s context window, keeping room for an
    /// answer of up to `max_completion_tokens`. The tenant's prompt, the client's instructions, the question
    /// and what followed it always go; of what is left, the most recent turns take up to half, and evidence
    /// the rest.
    pub fn build_chat(
        model: &ModelSpec,
        system_prompt: &str,
        conversation: Conversation,
        passages: Vec<Passage>,
        max_completion_tokens: u32,
        options: Options,
    ) -> Result<Self, ContextLengthExceeded> {
        let Conversation { instructions, history, question, after } = conversation;
        let mut prompt = Prompt {
            system_prompt: system_prompt.to_owned(),
            instructions,
            history: Vec::new(),
            question,
            after,
            passages: Vec::new(),
            max_completion_tokens,
            options,
            task: Task::Answer,
            tokens: 0,
        };
        let window = u64::from(model.context_window);
        let bare = prompt.count_tokens();
        let needed = bare + u64::from(max_completion_tokens);
        if needed > window {
            return Err(ContextLengthExceeded {
                window: model.context_window,
                needed,
                completion: max_completion_tokens,
            });
        }
        let room = window - needed;
        let history_used = prompt.keep_recent(history, room / 2);
        let mut budget = room - history_used;
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
        prompt.tokens =
            if prompt.passages.is_empty() && prompt.history.is_empty() { bare } else { prompt.count_tokens() };
        Ok(prompt)
    }

    /// A prompt asking `model` to restate the conversation's last question so that it can be understood
    /// without the conversation ("its headquarters?" after a question about Acme: "Where is Acme's
    /// headquarters?"), from the last few user and assistant turns, each shortened. `None` when no earlier
    /// question precedes it, or when even that does not fit the model's window.
    pub fn standalone(model: &ModelSpec, conversation: &Conversation) -> Option<Self> {
        let spoken: Vec<&Turn> = conversation
            .history
            .iter()
            .filter(|t| matches!(t.role, Role::User | Role::Assistant) && !t.text().trim().is_empty())
            .collect();
        let first_kept = spoken.len().saturating_sub(STANDALONE_TURNS);
        let history: Vec<Turn> = spoken[first_kept..]
            .iter()
            .map(|t| Turn::new(t.role, &tokens::truncate(t.text().trim(), STANDALONE_TURN_TOKENS), Map::new()))
            .collect();
        if !history.iter().any(|t| t.role == Role::User) {
            return None;
        }
        let mut upstream = Map::new();
        upstream.insert("temperature".into(), json!(0));
        let mut prompt = Prompt {
            system_prompt: String::new(),
            instructions: Vec::new(),
            history,
            question: conversation.question.clone(),
            after: Vec::new(),
            passages: Vec::new(),
            max_completion_tokens: STANDALONE_MAX_TOKENS,
            options: Options { upstream, ..Options::default() },
            task: Task::Standalone,
            tokens: 0,
        };
        prompt.tokens = prompt.count_tokens();
        let fits = prompt.tokens + u64::from(STANDALONE_MAX_TOKENS) <= u64::from(model.context_window);
        fits.then_some(prompt)
    }

    /// A prompt asking `model` for search queries that find what `question` asks (`Rewrite`), one per line,
    /// deterministically (temperature 0). `None` when it does not fit the model's window.
    pub fn search_queries(model: &ModelSpec, question: &str, rewrite: Rewrite) -> Option<Self> {
        let mut upstream = Map::new();
        upstream.insert("temperature".into(), json!(0));
        let mut prompt = Prompt {
            system_prompt: String::new(),
            instructions: Vec::new(),
            history: Vec::new(),
            question: question.to_owned(),
            after: Vec::new(),
            passages: Vec::new(),
            max_completion_tokens: SEARCH_QUERIES_MAX_TOKENS,
            options: Options { upstream, ..Options::default() },
            task: Task::SearchQueries(rewrite),
            tokens: 0,
        };
        prompt.tokens = prompt.count_tokens();
        let fits = prompt.tokens + u64::from(SEARCH_QUERIES_MAX_TOKENS) <= u64::from(model.context_window);
        fits.then_some(prompt)
    }

    /// Keeps the most recent turns of `history` that fit in `budget` tokens, whole exchanges at a time (an
    /// exchange starts at a user message, so a tool result never loses the call it answers); returns their
    /// tokens.
    fn keep_recent(&mut self, history: Vec<Turn>, budget: u64) -> u64 {
        let mut starts: Vec<usize> =
            history.iter().enumerate().filter(|(_, t)| t.role == Role::User).map(|(i, _)| i).collect();
        if starts.first() != Some(&0) {
            starts.insert(0, 0);
        }
        let mut used = 0;
        let mut keep_from = history.len();
        for &start in starts.iter().rev() {
            let cost: u64 = history[start..keep_from].iter().map(|t| t.tokens).sum();
            if used + cost > budget {
                break;
            }
            used += cost;
            keep_from = start;
        }
        self.history = history.into_iter().skip(keep_from).collect();
        used
    }

    pub fn question(&self) -> &str {
        &self.question
    }

    pub fn passages(&self) -> &[Passage] {
        &self.passages
    }

    pub fn history(&self) -> &[Turn] {
        &self.history
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    pub fn max_completion_tokens(&self) -> u32 {
        self.max_completion_tokens
    }

    /// The chat messages sent to an OpenAI-compatible endpoint: the tenant's system message, the client's
    /// instructions, the earlier turns that fit, the evidence with the question, and what followed it.
    pub fn messages(&self) -> Vec<Value> {
        if let Some(instructions) = self.task.helper_instructions() {
            return vec![
                json!({"role": "system", "content": instructions}),
                json!({"role": "user", "content": self.user_message()}),
            ];
        }
        let mut messages = vec![json!({"role": "system", "content": system_message(&self.system_prompt)})];
        messages.extend(self.instructions.iter().map(|t| t.message.clone()));
        messages.extend(self.history.iter().map(|t| t.message.clone()));
        messages.push(json!({"role": "user", "content": self.user_message()}));
        messages.extend(self.after.iter().map(|t| t.message.clone()));
        messages
    }

    fn user_message(&self) -> String {
        if self.task == Task::Standalone {
            let said: Vec<String> = self
                .history
                .iter()
                .map(|t| format!("{}: {}", if t.role == Role::User { "User" } else { "Assistant" }, t.text()))
                .collect();
            return format!("Conversation:\n{}\n\nLast question: {}", said.join("\n"), self.question);
        }
        if let Task::SearchQueries(_) = self.task {
            return format!("Question: {}", self.question);
        }
        let context: Vec<String> = self.passages.iter().map(render_passage).collect();
        format!("Context:\n{}\n\nQuestion: {}", context.join("\n\n"), self.question)
    }

    /// Prompt tokens as OpenAI counts a chat request: content plus per-message framing.
    pub fn token_count(&self) -> u64 {
        self.tokens
    }

    fn count_tokens(&self) -> u64 {
        if self.task.helper_instructions().is_some() {
            return self.task.helper_instruction_tokens()
                + tokens::count(&self.user_message())
                + self.options.tokens()
                + 2 * PER_MESSAGE_TOKENS
                + REPLY_PRIMING_TOKENS;
        }
        let turns = |turns: &[Turn]| turns.iter().map(|t| t.tokens).sum::<u64>();
        system_message_tokens(&self.system_prompt)
            + turns(&self.instructions)
            + turns(&self.history)
            + tokens::count(&self.user_message())
            + turns(&self.after)
            + self.options.tokens()
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
    static COUNTS: Remembered = Remembered::new();
    COUNTS.count(system_prompt, || tokens::count(&system_message(system_prompt)))
}

/// Tokens of one message of a conversation, remembered: a chat client sends the whole history again with
/// every question, so each earlier turn is counted once, not once per request.
fn turn_tokens(text: &str) -> u64 {
    static COUNTS: Remembered = Remembered::new();
    COUNTS.count(text, || tokens::count(text))
}

/// Token counts remembered by text; past `REMEMBERED` texts the memory starts over, and texts longer than
/// `LONGEST` are always counted afresh, so the memory stays small whatever the traffic.
struct Remembered(Mutex<Option<HashMap<String, u64>>>);

impl Remembered {
    const REMEMBERED: usize = 4_096;
    const LONGEST: usize = 4_096;

    const fn new() -> Self {
        Self(Mutex::new(None))
    }

    fn count(&self, text: &str, count: impl FnOnce() -> u64) -> u64 {
        if text.len() > Self::LONGEST {
            return count();
        }
        let lock = || self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(n) = lock().as_ref().and_then(|counts| counts.get(text).copied()) {
            return n;
        }
        let n = count();
        let mut counts = lock();
        let counts = counts.get_or_insert_with(HashMap::new);
        if counts.len() >= Self::REMEMBERED {
            counts.clear();
        }
        counts.insert(text.to_owned(), n);
        n
    }
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
        let p = Prompt::build(&model(1024), "Be terse.", question, passages, 256).expect("fits");
        assert!(p.token_count() + 256 <= 1024, "{} tokens", p.token_count());
        assert!(!p.passages.is_empty() && p.passages.len() < 10);
        assert!(p.messages()[1]["content"].as_str().expect("text").ends_with(question));
        assert!(p.messages()[0]["content"].as_str().expect("text").starts_with("Be terse."));
    }

    #[test]
    fn everything_fits_in_a_large_window() {
        let passages: Vec<_> = (1..=3).map(|n| passage(n, 20)).collect();
        let p = Prompt::build(&model(8192), "", "q?", passages.clone(), 256).expect("fits");
        assert_eq!(p.passages, passages);
    }

    #[test]
    fn the_count_is_the_messages_own_count_whatever_is_remembered() {
        let counted = |p: &Prompt| {
            p.messages()
                .iter()
                .map(|m| tokens::count(m["content"].as_str().unwrap_or("")) + PER_MESSAGE_TOKENS)
                .sum::<u64>()
                + REPLY_PRIMING_TOKENS
        };
        for system in ["", "Be terse.", "Answer in French, citing every passage.", "Be terse."] {
            for passages in [vec![], (1..=3).map(|n| passage(n, 30)).collect()] {
                let p = Prompt::build(&model(8192), system, "How long do refunds take?", passages, 256).expect("fits");
                assert_eq!(p.token_count(), counted(&p), "system prompt {system:?}, {} passages", p.passages.len());
            }
        }
    }

    fn turn(role: Role, text: &str) -> Turn {
        Turn::new(role, text, Map::new())
    }

    fn conversation(turns: usize, words: usize) -> Conversation {
        let history = (0..turns)
            .flat_map(|i| {
                [
                    turn(Role::User, &format!("question {i} {}", "word ".repeat(words))),
                    turn(Role::Assistant, &format!("answer {i}")),
                ]
            })
            .collect();
        Conversation {
            instructions: vec![turn(Role::System, "Answer in French.")],
            history,
            question: "And its headquarters?".into(),
            after: Vec::new(),
        }
    }

    #[test]
    fn the_conversation_goes_in_order_after_the_tenants_prompt() {
        let passages: Vec<_> = (1..=2).map(|n| passage(n, 20)).collect();
        let p = Prompt::build_chat(
            &model(8192),
            "You are Acme's assistant.",
            conversation(2, 3),
            passages,
            256,
            Options::default(),
        )
        .expect("fits");
        let m = p.messages();
        let roles: Vec<&str> = m.iter().map(|m| m["role"].as_str().expect("role")).collect();
        assert_eq!(roles, ["system", "system", "user", "assistant", "user", "assistant", "user"]);
        assert!(m[0]["content"].as_str().expect("text").starts_with("You are Acme's assistant."));
        assert_eq!(m[1]["content"], "Answer in French.");
        assert!(m[2]["content"].as_str().expect("text").starts_with("question 0"));
        assert!(m[6]["content"].as_str().expect("text").ends_with("Question: And its headquarters?"));
        assert_eq!(p.passages().len(), 2);
        let counted: u64 =
            m.iter().map(|m| tokens::count(m["content"].as_str().unwrap_or("")) + PER_MESSAGE_TOKENS).sum::<u64>()
                + REPLY_PRIMING_TOKENS;
        assert_eq!(p.token_count(), counted);
    }

    #[test]
    fn the_oldest_turns_are_trimmed_first_and_never_the_question() {
        let p = Prompt::build_chat(
            &model(1024),
            "Be terse.",
            conversation(40, 20),
            vec![passage(1, 50)],
            256,
            Options::default(),
        )
        .expect("fits");
        assert!(p.token_count() + 256 <= 1024, "{} tokens", p.token_count());
        let kept = p.history();
        assert!(!kept.is_empty() && kept.len() < 80, "{} turns kept", kept.len());
        assert!(kept.last().expect("a turn").text() == "answer 39", "the most recent turn is kept");
        assert_eq!(kept[0].role, Role::User, "whole exchanges are dropped");
        assert_eq!(p.passages().len(), 1, "evidence keeps its half");
        assert!(p.messages().last().expect("question")["content"].as_str().expect("text").ends_with("headquarters?"));
    }

    #[test]
    fn a_standalone_prompt_holds_the_last_turns_shortened_and_the_question() {
        let p = Prompt::standalone(&model(8192), &conversation(10, 400)).expect("an earlier question");
        let m = p.messages();
        assert_eq!(m.len(), 2);
        assert!(m[0]["content"].as_str().is_some_and(|c| c.starts_with("Rewrite the user's last question")));
        let user = m[1]["content"].as_str().expect("text");
        assert!(user.ends_with("Last question: And its headquarters?"), "{user}");
        assert!(user.contains("Assistant: answer 9") && user.contains("User: question 7"), "the last turns");
        assert!(!user.contains("question 6 ") && !user.contains("Answer in French"), "older turns and instructions");
        let counted: u64 =
            m.iter().map(|m| tokens::count(m["content"].as_str().unwrap_or("")) + PER_MESSAGE_TOKENS).sum::<u64>()
                + REPLY_PRIMING_TOKENS;
        assert_eq!(p.token_count(), counted);
        assert!(p.token_count() < 3 * 220 + 120, "each turn shortened: {}", p.token_count());
        assert_eq!((p.max_completion_tokens(), p.options().upstream.get("temperature")), (128, Some(&json!(0))));
    }

    #[test]
    fn there_is_no_standalone_prompt_without_an_earlier_question_or_room() {
        assert!(Prompt::standalone(&model(8192), &conversation(0, 0)).is_none());
        let only_instructions = Conversation { history: vec![turn(Role::Assistant, "Hello!")], ..conversation(0, 0) };
        assert!(Prompt::standalone(&model(8192), &only_instructions).is_none());
        assert!(Prompt::standalone(&model(64), &conversation(3, 100)).is_none(), "does not fit a tiny window");
    }

    #[test]
    fn a_conversation_that_cannot_fit_is_refused_with_the_numbers() {
        let mut long = conversation(0, 0);
        long.question = "word ".repeat(2_000);
        let e = Prompt::build_chat(&model(1024), "", long, Vec::new(), 256, Options::default()).expect_err("too long");
        assert_eq!((e.window, e.completion), (1024, 256));
        assert!(e.needed > 2_000, "{e}");
    }

    #[test]
    fn follow_ups_are_read_with_the_previous_question() {
        let mut c = Conversation::question("Which company makes the Widget 3000?");
        c.history = vec![turn(Role::User, "Which company makes the Widget 3000?"), turn(Role::Assistant, "Acme [1].")];
        c.question = "Where is its headquarters?".into();
        assert_eq!(
            c.standalone_question(),
            "Which company makes the Widget 3000? Acme [1]. Where is its headquarters?"
        );
        c.question = "How long do refunds take for annual plans?".into();
        assert_eq!(c.standalone_question(), "How long do refunds take for annual plans?");
        assert_eq!(Conversation::question("Why?").standalone_question(), "Why?", "no earlier turn to lean on");
    }

    #[test]
    fn the_offline_model_names_what_it_cannot_honour() {
        let mut options = Options::default();
        assert_eq!(options.unsupported_offline(), None);
        options.upstream.insert("temperature".into(), json!(0.2));
        options.upstream.insert("parallel_tool_calls".into(), json!(false));
        assert_eq!(options.unsupported_offline(), None);
        options.upstream.insert("tools".into(), json!([{"type": "function"}]));
        assert_eq!(options.unsupported_offline(), Some("tools"));
        let schema = Options { response_format: ResponseFormat::JsonSchema, ..Options::default() };
        assert_eq!(schema.unsupported_offline(), Some("response_format"));
    }
}
