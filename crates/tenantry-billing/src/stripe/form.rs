//! Stripe's request bodies: `application/x-www-form-urlencoded` with nested keys in bracket notation
//! (`metadata[tenant_id]=…`, `line_items[0][price_data][currency]=…`). Brackets are written literally and
//! everything else percent-encoded, as Stripe's own libraries do, so bodies read well in logs.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Form {
    /// Key path (root first) and value, in insertion order.
    fields: Vec<(Vec<String>, String)>,
}

impl Form {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `path[0][path[1]]…` to `value`.
    pub fn set(&mut self, path: &[&str], value: impl Into<String>) -> &mut Self {
        self.fields.push((path.iter().map(|s| (*s).to_owned()).collect(), value.into()));
        self
    }

    /// Sets `metadata[key]` for each entry.
    pub fn metadata(&mut self, metadata: &BTreeMap<String, String>) -> &mut Self {
        for (key, value) in metadata {
            self.set(&["metadata", key], value.clone());
        }
        self
    }

    /// The fields with their keys in bracket notation, unencoded: what a server decodes.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.fields.iter().map(|(path, value)| (key(path, |s, out| out.push_str(s)), value.clone())).collect()
    }

    /// The request body.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, (path, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(&key(path, percent_encode));
            out.push('=');
            percent_encode(value, &mut out);
        }
        out
    }
}

/// `root[a][b]`, each segment written by `write`.
fn key(path: &[String], write: impl Fn(&str, &mut String)) -> String {
    let mut out = String::new();
    for (i, segment) in path.iter().enumerate() {
        if i == 0 {
            write(segment, &mut out);
        } else {
            out.push('[');
            write(segment, &mut out);
            out.push(']');
        }
    }
    out
}

/// Percent-encodes all but RFC 3986's unreserved characters, so a bracket or `&` inside a segment or a
/// value cannot change the structure.
fn percent_encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys_use_bracket_notation() {
        let mut form = Form::new();
        form.set(&["line_items", "0", "price_data", "currency"], "usd")
            .set(&["success_url"], "https://x.test/ok?a=1&b=2");
        form.metadata(&BTreeMap::from([("tenant_id".to_owned(), "ten_1".to_owned())]));
        assert_eq!(
            form.encode(),
            "line_items[0][price_data][currency]=usd&success_url=https%3A%2F%2Fx.test%2Fok%3Fa%3D1%26b%3D2\
             &metadata[tenant_id]=ten_1"
        );
        assert_eq!(form.pairs()[0], ("line_items[0][price_data][currency]".to_owned(), "usd".to_owned()));
    }

    #[test]
    fn hostile_segments_and_values_stay_inside_their_field() {
        let mut form = Form::new();
        form.set(&["metadata", "a]&b[c"], "x y=ü");
        assert_eq!(form.encode(), "metadata[a%5D%26b%5Bc]=x%20y%3D%C3%BC");
    }
}
