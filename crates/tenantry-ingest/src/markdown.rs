//! Markdown: headings become the heading path of the blocks under them; paragraphs, list items, table rows
//! and code blocks become blocks.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::{Block, ParsedDocument};

pub(crate) fn parse(text: &str) -> ParsedDocument {
    let mut doc = ParsedDocument::default();
    // (level, text) of the open headings, outermost first.
    let mut headings: Vec<(HeadingLevel, String)> = Vec::new();
    let mut in_heading: Option<(HeadingLevel, String)> = None;
    let mut buf = String::new();

    let flush = |buf: &mut String, headings: &[(HeadingLevel, String)], doc: &mut ParsedDocument| {
        let text = buf.split_whitespace().collect::<Vec<_>>().join(" ");
        buf.clear();
        if !text.is_empty() {
            let heading = headings.iter().map(|(_, h)| h.as_str()).collect::<Vec<_>>().join(" > ");
            doc.blocks.push(Block { heading, page: None, text });
        }
    };

    for event in Parser::new_ext(text, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                flush(&mut buf, &headings, &mut doc);
                in_heading = Some((level, String::new()));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, h)) = in_heading.take() {
                    let h = h.split_whitespace().collect::<Vec<_>>().join(" ");
                    if h.is_empty() {
                        continue;
                    }
                    if level == HeadingLevel::H1 && doc.title.is_none() {
                        doc.title = Some(h.clone());
                    }
                    headings.retain(|(l, _)| *l < level);
                    headings.push((level, h));
                }
            }
            Event::Text(t) | Event::Code(t) => match in_heading.as_mut() {
                Some((_, h)) => h.push_str(&t),
                None => buf.push_str(&t),
            },
            Event::SoftBreak | Event::HardBreak => match in_heading.as_mut() {
                Some((_, h)) => h.push(' '),
                None => buf.push(' '),
            },
            Event::End(TagEnd::Paragraph | TagEnd::Item | TagEnd::CodeBlock | TagEnd::TableRow)
            | Event::End(TagEnd::TableHead) => flush(&mut buf, &headings, &mut doc),
            Event::End(TagEnd::TableCell) => buf.push_str(" | "),
            _ => {}
        }
    }
    flush(&mut buf, &headings, &mut doc);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_nest_and_reset() {
        let doc = parse(
            "# Handbook\n\nIntro text.\n\n## Refunds\n\nWithin 14 days.\n\n- card\n- cash\n\n## Shipping\n\nFree.\n\n# Annex\n\nMore.",
        );
        assert_eq!(doc.title.as_deref(), Some("Handbook"));
        let got: Vec<_> = doc.blocks.iter().map(|b| (b.heading.as_str(), b.text.as_str())).collect();
        assert_eq!(
            got,
            [
                ("Handbook", "Intro text."),
                ("Handbook > Refunds", "Within 14 days."),
                ("Handbook > Refunds", "card"),
                ("Handbook > Refunds", "cash"),
                ("Handbook > Shipping", "Free."),
                ("Annex", "More."),
            ]
        );
    }

    #[test]
    fn inline_markup_is_text() {
        let doc = parse("Use `tenantry serve` and **bold** [links](http://x).");
        assert_eq!(doc.blocks[0].text, "Use tenantry serve and bold links.");
    }
}
