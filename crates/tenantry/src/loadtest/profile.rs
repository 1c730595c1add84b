//! Who the load test's tenants are: one profile per tenant index, spread over plans (loose and tight
//! quotas), models (offline and two hosted ones behind the fake upstream), retrieval modes and prompts; the
//! configuration that makes a service offer them; the markers that tie text to a tenant.

/// Marks a tenant's system prompt: `LTPROMPT<index>X`.
pub const PROMPT_MARKER: &str = "LTPROMPT";
/// Marks every document a tenant uploads: `LTDOC<index>X`.
pub const DOCUMENT_MARKER: &str = "LTDOC";

/// A model the tenants use: its name, and the name the upstream is asked for (`None`: offline).
pub struct Model {
    pub name: &'static str,
    pub upstream: Option<&'static str>,
}

pub const MODELS: [Model; 3] = [
    Model { name: "local-small", upstream: None },
    Model { name: "lt-alpha", upstream: Some("alpha-upstream-1") },
    Model { name: "lt-beta", upstream: Some("beta-upstream-2") },
];

/// The plans: two with room to spare that tenants switch between, and a tight one.
pub const LOOSE: &str = "lt-loose";
pub const PLUS: &str = "lt-plus";
pub const TIGHT: &str = "lt-tight";
/// The tight plan's questions per period and documents: a tenant asking at its share of the rate reaches
/// them within a minute, so refusals at the quota happen in every run of that length.
pub const TIGHT_QUERIES: u64 = 25;
pub const TIGHT_DOCUMENTS: u64 = 4;

pub struct Profile {
    pub index: usize,
    pub plan: &'static str,
    pub model: &'static Model,
    pub mode: &'static str,
}

impl Profile {
    pub fn of(index: usize) -> Self {
        Self {
            index,
            plan: if index % 5 == 4 { TIGHT } else { LOOSE },
            model: &MODELS[index % MODELS.len()],
            mode: if index % 2 == 0 { "basic" } else { "advanced" },
        }
    }

    pub fn system_prompt(&self) -> String {
        format!("You answer for load-test tenant {PROMPT_MARKER}{}X. Cite the passages you use.", self.index)
    }

    /// A document only this tenant has; `serial` makes each upload's content, and so its digest, new.
    pub fn document(&self, serial: u64) -> String {
        let marker = format!("{DOCUMENT_MARKER}{}X", self.index);
        let mut text = format!("# Procedure {marker} number {serial}\n\nThe {marker} procedure, revision {serial}, ");
        text.push_str("is how this tenant handles refunds: a refund is issued within fourteen days of a request.\n\n");
        text.push_str("Requests arrive through the portal and are checked against the original order before any ");
        text.push_str("money moves. Partial refunds keep the shipping cost unless the goods arrived damaged.\n");
        text
    }

    pub fn question(&self) -> String {
        format!("How long does a refund take under the {DOCUMENT_MARKER}{}X procedure?", self.index)
    }
}

/// The tenant indexes named by `prefix<digits>X` markers in `text`, in order of appearance.
pub fn markers(text: &str, prefix: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest.as_bytes().get(digits) == Some(&b'X') {
            if let Ok(index) = rest[..digits].parse() {
                found.push(index);
            }
        }
    }
    found
}

/// The models and plans a service needs to serve the load test's tenants, its hosted models pointing at
/// the fake upstream `upstream` (e.g. `http://127.0.0.1:9000`). `tenantry loadtest --print-config` prints it
/// for a deployment's nodes.
pub fn config(upstream: &str) -> String {
    let mut toml = String::from("# The load test's models and plans (tenantry loadtest --print-config).\n");
    for model in &MODELS {
        match model.upstream {
            None => toml.push_str(&format!(
                "\n[[models]]\nname = \"{}\"\nprovider = \"local\"\nanswer_sentences = 2\n\
                 input_usd_per_million = 0.10\noutput_usd_per_million = 0.40\n",
                model.name
            )),
            Some(upstream_model) => toml.push_str(&format!(
                "\n[[models]]\nname = \"{}\"\nprovider = \"openai\"\nbase_url = \"{upstream}/v1\"\n\
                 upstream_model = \"{upstream_model}\"\ninput_usd_per_million = 0.50\n\
                 output_usd_per_million = 1.50\nmax_retries = 0\n",
                model.name
            )),
        }
    }
    let models = MODELS.iter().map(|m| format!("\"{}\"", m.name)).collect::<Vec<_>>().join(", ");
    for (plan, queries, documents, per_minute) in [
        (LOOSE, 1_000_000_000, 1_000_000, 100_000_000),
        (PLUS, 1_000_000_000, 1_000_000, 100_000_000),
        (TIGHT, TIGHT_QUERIES, TIGHT_DOCUMENTS, 600),
    ] {
        toml.push_str(&format!(
            "\n[[plans]]\nname = \"{plan}\"\nmodels = [{models}]\ndefault_model = \"local-small\"\n\
             retrieval_modes = [\"basic\", \"advanced\"]\ndefault_retrieval_mode = \"basic\"\n\
             [plans.quotas]\nqueries = {queries}\ntokens = 1000000000000\ndocuments = {documents}\n\
             storage_bytes = 1000000000000\nrequests_per_minute = {per_minute}\n"
        ));
    }
    toml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_name_their_tenants_and_nothing_else() {
        let text = "LTDOC12X and LTDOC3X, not LTDOC7 nor LTDOCX nor LTDOC44Y; LTDOC0X";
        assert_eq!(markers(text, DOCUMENT_MARKER), vec![12, 3, 0]);
        assert_eq!(markers(&Profile::of(41).system_prompt(), PROMPT_MARKER), vec![41]);
        assert_eq!(markers(&Profile::of(41).document(9), DOCUMENT_MARKER), vec![41, 41]);
    }

    #[test]
    fn the_printed_configuration_is_one_a_service_accepts() {
        let config = tenantry_domain::Config::from_toml(&config("http://127.0.0.1:9")).expect("valid");
        let catalog = config.catalog().expect("consistent");
        for plan in [LOOSE, PLUS, TIGHT] {
            assert!(catalog.plan(plan).is_some(), "{plan}");
        }
        for model in &MODELS {
            assert!(catalog.model(model.name).is_some(), "{}", model.name);
        }
    }
}
