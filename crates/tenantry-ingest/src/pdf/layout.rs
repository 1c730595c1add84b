//! Page layout: a PDF only places glyphs, so lines, paragraphs and headings are inferred from geometry.
//!
//! Glyphs join the current line while they stay on its baseline and move right; a visible gap becomes a space,
//! because many producers position words instead of drawing space glyphs. Lines start a new paragraph after a
//! vertical gap larger than the document's usual line spacing, on a first-line indent, or after a line that
//! stops well short of the right margin; a list label alone on its line (`(a)`) joins the text after it. A paragraph of one short line that is set apart above and below, reads like a
//! title (capital first, no closing punctuation) and is followed by body text becomes a heading; a run of such
//! lines (`Article 17`, `Right to erasure`) forms one heading path. Page numbers alone on the first or last
//! line of a page are dropped.

use crate::Block;

/// Share of the font size that a horizontal gap must exceed to count as a space between words (kerning and
/// rounding stay well below, justified word gaps well above).
const WORD_GAP: f64 = 0.15;
/// Vertical distance between baselines, relative to the usual line spacing (see `leading`), above which a
/// paragraph ends.
const PARAGRAPH_GAP: f64 = 1.15;
/// Headings this long, in words, or more are treated as text.
const MAX_HEADING_WORDS: usize = 16;
const MAX_HEADING_CHARS: usize = 120;
/// Longest run of consecutive heading lines kept as one heading path; anything longer is rather a list.
const MAX_HEADING_RUN: usize = 8;
/// Font sizes closer than this are the same heading level.
const SIZE_EPSILON: f64 = 0.5;

/// One decoded character (or ligature) as placed on the page, in PDF user space (y grows upwards).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Glyph<'a> {
    /// Left edge of the glyph, on the baseline.
    pub x: f64,
    pub y: f64,
    /// Horizontal advance.
    pub width: f64,
    pub size: f64,
    pub text: &'a str,
}

/// Glyphs on one baseline, in drawing order.
#[derive(Clone, Debug)]
struct Line {
    x0: f64,
    x1: f64,
    y: f64,
    size: f64,
    text: String,
}

impl Line {
    fn start(g: &Glyph) -> Line {
        Line { x0: g.x, x1: g.x + g.width, y: g.y, size: g.size, text: g.text.to_owned() }
    }

    /// Whether `g` is on this line's baseline (sub- and superscripts included) and to the right of it.
    fn continues_with(&self, g: &Glyph) -> bool {
        let size = self.size.max(g.size);
        (g.y - self.y).abs() <= size * 0.5 && g.x >= self.x1 - size
    }

    fn push(&mut self, g: &Glyph) {
        let gap = g.x - self.x1;
        let spaced = self.text.ends_with(char::is_whitespace) || g.text.starts_with(char::is_whitespace);
        if gap > WORD_GAP * self.size.max(g.size) && !spaced {
            self.text.push(' ');
        }
        self.text.push_str(g.text);
        self.x1 = self.x1.max(g.x + g.width);
        self.size = self.size.max(g.size);
    }

    fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }
}

/// The lines of one page, built glyph by glyph so that a long document never holds all its glyphs at once.
#[derive(Debug)]
pub(crate) struct Page {
    pub number: u32,
    lines: Vec<Line>,
}

impl Page {
    pub fn new(number: u32) -> Page {
        Page { number, lines: Vec::new() }
    }

    pub fn push(&mut self, glyph: Glyph) {
        if glyph.text.is_empty() || !glyph.x.is_finite() || !glyph.y.is_finite() {
            return;
        }
        match self.lines.last_mut() {
            Some(line) if line.continues_with(&glyph) => line.push(&glyph),
            // A line never starts with a space: its left edge must be that of its first word.
            _ if glyph.text.trim().is_empty() => {}
            _ => self.lines.push(Line::start(&glyph)),
        }
    }

    pub fn has_text(&self) -> bool {
        self.lines.iter().any(|l| !l.is_blank())
    }

    /// The lines that carry content: blank lines and page numbers at the top or bottom are dropped.
    fn body(&self) -> Vec<&Line> {
        let mut lines: Vec<&Line> = self.lines.iter().filter(|l| !l.is_blank()).collect();
        if lines.last().is_some_and(|l| is_page_number(&l.text)) {
            lines.pop();
        }
        if lines.first().is_some_and(|l| is_page_number(&l.text)) {
            lines.remove(0);
        }
        lines
    }
}

/// `12`, `-12-`, `Page 3`, `3 / 40`, `Page 3 of 40`: nothing but a page number (`(6)` is rather a list label).
fn is_page_number(text: &str) -> bool {
    let text = text.to_lowercase();
    let rest = text.split_whitespace().filter(|w| !matches!(*w, "page" | "of")).collect::<String>();
    text.chars().count() <= 20
        && rest.chars().any(|c| c.is_ascii_digit())
        && rest.chars().all(|c| c.is_ascii_digit() || "-–—/.|".contains(c))
}

/// Lines of one page that belong together, with whether white space sets them apart from their neighbours.
#[derive(Debug)]
struct Paragraph<'a> {
    lines: Vec<&'a Line>,
    spaced_before: bool,
    spaced_after: bool,
}

/// What a paragraph is to the outline.
#[derive(Debug, PartialEq)]
enum Role {
    Heading,
    Label,
    Text,
}

impl Paragraph<'_> {
    fn text(&self) -> String {
        join_lines(self.lines.iter().map(|l| l.text.as_str()))
    }

    fn size(&self) -> f64 {
        self.lines.iter().map(|l| l.size).fold(0.0, f64::max)
    }

    /// The role of this paragraph, whose joined text is `text`.
    fn role(&self, text: &str) -> Role {
        let single = self.lines.len() == 1;
        if single && self.spaced_before && self.spaced_after && reads_like_heading(text) {
            Role::Heading
        } else if single && is_label(text) {
            Role::Label
        } else {
            Role::Text
        }
    }
}

/// What a page's lines are measured against.
struct Metrics {
    /// The document's usual distance between baselines inside a paragraph, per unit of font size.
    leading: f64,
    right: f64,
    width: f64,
}

impl Metrics {
    fn of(lines: &[&Line], leading: f64) -> Metrics {
        let left = lines.iter().map(|l| l.x0).fold(f64::INFINITY, f64::min);
        let right = lines.iter().map(|l| l.x1).fold(f64::NEG_INFINITY, f64::max);
        Metrics { leading, right, width: right - left }
    }

    /// Whether `line` starts a new paragraph after `prev`, and whether that is marked by vertical space.
    fn breaks(&self, prev: &Line, line: &Line) -> (bool, bool) {
        let gap = prev.y - line.y;
        let size = prev.size.max(line.size);
        let spaced = gap > self.leading * size * PARAGRAPH_GAP || gap < -0.5 * size;
        let indented = line.x0 > prev.x0 + 0.5 * size;
        let prev_short = prev.x1 < self.right - 0.2 * self.width;
        (spaced || indented || prev_short, spaced)
    }
}

/// The distance between consecutive baselines, per unit of font size, that most lines inside paragraphs keep.
/// Measured over the whole document, at a low percentile rather than the median: on a page of short list
/// items most gaps are paragraph gaps.
fn leading(pages: &[Vec<&Line>]) -> f64 {
    let mut ratios: Vec<f64> = pages
        .iter()
        .flat_map(|lines| lines.windows(2))
        .map(|w| (w[0].y - w[1].y) / w[0].size.min(w[1].size))
        // Closer baselines are sub/superscripts or overprints; much wider ones are not within a paragraph.
        .filter(|ratio| (0.5..3.0).contains(ratio))
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len().saturating_sub(1) / 5).copied().unwrap_or(1.2)
}

fn paragraphs<'a>(lines: &[&'a Line], leading: f64) -> Vec<Paragraph<'a>> {
    let Some(first) = lines.first() else { return Vec::new() };
    let metrics = Metrics::of(lines, leading);
    let mut paragraphs = vec![Paragraph { lines: vec![*first], spaced_before: true, spaced_after: true }];
    for pair in lines.windows(2) {
        let (breaks, spaced) = metrics.breaks(pair[0], pair[1]);
        let Some(current) = paragraphs.last_mut() else { continue };
        if breaks {
            current.spaced_after = spaced;
            paragraphs.push(Paragraph { lines: vec![pair[1]], spaced_before: spaced, spaced_after: true });
        } else {
            current.lines.push(pair[1]);
        }
    }
    paragraphs
}

/// Joins the lines of a paragraph, collapsing white space and mending words hyphenated at a line end.
fn join_lines<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for line in lines {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            continue;
        }
        if out.is_empty() {
            out = line;
            continue;
        }
        if ends_hyphenated(&out) && line.starts_with(|c: char| c.is_lowercase()) {
            out.pop();
        } else {
            out.push(' ');
        }
        out.push_str(&line);
    }
    out.replace('\u{ad}', "")
}

/// `regu-`: a hyphen right after a lowercase letter ends the line (a soft hyphen counts too).
fn ends_hyphenated(text: &str) -> bool {
    let mut rev = text.chars().rev();
    matches!(rev.next(), Some('-' | '\u{ad}')) && rev.next().is_some_and(char::is_lowercase)
}

/// Short, starts like a title, and does not end like a sentence.
fn reads_like_heading(text: &str) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    let first_word = words.iter().find(|w| !is_section_number(w));
    !words.is_empty()
        && words.len() <= MAX_HEADING_WORDS
        && text.chars().count() <= MAX_HEADING_CHARS
        && first_word.is_some_and(|w| w.starts_with(char::is_uppercase))
        && !text.ends_with(['.', ',', ';', ':', '!', '?'])
}

/// `3`, `2.1`, `4.`: a number in front of a heading.
fn is_section_number(word: &str) -> bool {
    let word = word.trim_end_matches('.');
    !word.is_empty() && word.split('.').all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
}

/// `(a)`, `(98)`, `1.`, `iv)`, `•`: a list label set on its own line, which belongs to the text after it.
fn is_label(text: &str) -> bool {
    let inner = text.strip_prefix('(').unwrap_or(text);
    let Some(inner) = inner.strip_suffix([')', '.']) else {
        return text.chars().count() == 1 && !text.chars().any(char::is_alphanumeric);
    };
    (1..=4).contains(&inner.chars().count()) && inner.chars().all(char::is_alphanumeric)
}

/// Turns paragraphs into blocks under the heading path in force; heading lines wait in `run` until body text
/// confirms them.
#[derive(Default)]
struct Outline {
    /// (font size, heading) from the outermost in.
    path: Vec<(f64, String)>,
    /// (page, font size, heading) of the heading lines waiting for text.
    run: Vec<(u32, f64, String)>,
    /// (page, label) of a list label waiting for its text.
    label: Option<(u32, String)>,
    blocks: Vec<Block>,
}

impl Outline {
    fn add(&mut self, page: u32, paragraph: &Paragraph) {
        let text = paragraph.text();
        match paragraph.role(&text) {
            // Right after a list label comes the item's text, whatever it looks like.
            Role::Heading if self.label.is_none() => {
                if self.run.len() == MAX_HEADING_RUN {
                    let (page, _, text) = self.run.remove(0);
                    self.push_text(page, text);
                }
                self.run.push((page, paragraph.size(), text));
            }
            Role::Label => {
                if let Some((page, label)) = self.label.replace((page, text)) {
                    self.push_text(page, label);
                }
            }
            Role::Heading | Role::Text => {
                self.confirm_run();
                let text = match self.label.take() {
                    Some((_, label)) => format!("{label} {text}"),
                    None => text,
                };
                self.push_text(page, text);
            }
        }
    }

    /// The waiting heading lines become the heading path: a larger font is an outer level, and a run replaces
    /// the headings of its own size and smaller.
    fn confirm_run(&mut self) {
        let mut previous: Option<f64> = None;
        for (_, size, text) in std::mem::take(&mut self.run) {
            if previous.is_none_or(|p| size > p + SIZE_EPSILON) {
                self.path.retain(|(s, _)| *s > size + SIZE_EPSILON);
            }
            self.path.push((size, text));
            previous = Some(size);
        }
    }

    fn push_text(&mut self, page: u32, text: String) {
        let heading = self.path.iter().map(|(_, h)| h.as_str()).collect::<Vec<_>>().join(" > ");
        self.blocks.push(Block { heading, page: Some(page), text });
    }

    /// Heading lines that no text followed, and a dangling label, are text after all.
    fn finish(mut self) -> Vec<Block> {
        for (page, _, text) in std::mem::take(&mut self.run) {
            self.push_text(page, text);
        }
        if let Some((page, label)) = self.label.take() {
            self.push_text(page, label);
        }
        self.blocks
    }
}

/// The blocks of a document, one or more per page with text, in reading order.
pub(crate) fn blocks(pages: &[Page]) -> Vec<Block> {
    let bodies: Vec<Vec<&Line>> = pages.iter().map(Page::body).collect();
    let leading = leading(&bodies);
    let mut outline = Outline::default();
    for (page, lines) in pages.iter().zip(&bodies) {
        for paragraph in paragraphs(lines, leading) {
            outline.add(page.number, &paragraph);
        }
    }
    outline.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page from (x, y, text) lines set in a 10-point font with 5-point-wide glyphs and explicit spaces.
    fn page(lines: &[(f64, f64, &str)]) -> Page {
        let mut page = Page::new(1);
        for (x, y, text) in lines {
            for (n, (i, c)) in text.char_indices().enumerate() {
                let text = &text[i..i + c.len_utf8()];
                page.push(Glyph { x: x + 5.0 * n as f64, y: *y, width: 5.0, size: 10.0, text });
            }
        }
        page
    }

    fn texts(blocks: &[Block]) -> Vec<(&str, &str)> {
        blocks.iter().map(|b| (b.heading.as_str(), b.text.as_str())).collect()
    }

    #[test]
    fn gaps_between_glyphs_become_spaces() {
        let mut p = Page::new(1);
        for (x, t) in [(0.0, "W"), (5.0, "o"), (10.0, "r"), (15.0, "d"), (22.0, "t"), (27.0, "w"), (32.5, "o")] {
            p.push(Glyph { x, y: 100.0, width: 5.0, size: 10.0, text: t });
        }
        assert_eq!(texts(&blocks(&[p])), [("", "Word two")]);
    }

    #[test]
    fn paragraphs_join_lines_and_mend_hyphens() {
        // The second paragraph starts after a wider gap, with a first-line indent.
        let p = page(&[
            (0.0, 700.0, "The first paragraph runs over two lines and is hyphen-"),
            (0.0, 688.0, "ated here, then it ends."),
            (25.0, 672.0, "Second paragraph after space and with an indent, wide"),
            (0.0, 660.0, "enough to be a full line of text on this page of tests."),
        ]);
        assert_eq!(
            texts(&blocks(&[p])),
            [
                ("", "The first paragraph runs over two lines and is hyphenated here, then it ends."),
                ("", "Second paragraph after space and with an indent, wide enough to be a full line of text on this page of tests."),
            ]
        );
    }

    #[test]
    fn standalone_short_lines_become_the_heading_path() {
        let body = "The data subject shall have the right to obtain erasure of";
        let p = page(&[
            (0.0, 760.0, "-7-"),
            (0.0, 700.0, "Article 17"),
            (25.0, 684.0, "Right to erasure (‘right to be forgotten’)"),
            (25.0, 668.0, body),
            (0.0, 656.0, "personal data without undue delay."),
            (25.0, 640.0, "(a)"),
            (25.0, 624.0, "the data are no longer necessary;"),
        ]);
        let heading = "Article 17 > Right to erasure (‘right to be forgotten’)";
        assert_eq!(
            texts(&blocks(&[p])),
            [
                (heading, &*format!("{body} personal data without undue delay.")),
                (heading, "(a) the data are no longer necessary;")
            ]
        );
    }

    #[test]
    fn sentences_and_unspaced_lines_are_not_headings() {
        let p = page(&[
            (0.0, 700.0, "Whereas:"),
            (0.0, 684.0, "The end."),
            (0.0, 668.0, "Short line"),
            (0.0, 656.0, "(lowercase follows, no gap above it) and the text goes on."),
        ]);
        assert!(blocks(&[p]).iter().all(|b| b.heading.is_empty()));
    }

    #[test]
    fn a_larger_heading_stays_outside_the_next_runs() {
        let body = "Body text that fills the whole measure of this test page.";
        let lines = [
            (20.0, 760.0, "CHAPTER III"),
            (10.0, 730.0, "Article 12"),
            (10.0, 714.0, body),
            (10.0, 702.0, body),
            (10.0, 680.0, "Article 13"),
            (10.0, 664.0, body),
        ];
        let mut p = Page::new(4);
        for (size, y, text) in lines {
            for (n, (i, c)) in text.char_indices().enumerate() {
                let glyph = &text[i..i + c.len_utf8()];
                p.push(Glyph { x: size / 2.0 * n as f64, y, width: size / 2.0, size, text: glyph });
            }
        }
        let blocks = blocks(&[p]);
        let headings: Vec<_> = blocks.iter().map(|b| (b.heading.as_str(), b.page)).collect();
        assert_eq!(headings, [("CHAPTER III > Article 12", Some(4)), ("CHAPTER III > Article 13", Some(4))]);
    }

    #[test]
    fn heading_lines_without_text_after_them_are_text() {
        let body = "Body text that fills the whole measure of this test page";
        let p = page(&[
            (0.0, 700.0, body),
            (0.0, 688.0, "ends here."),
            (0.0, 660.0, "Annex"),
            (0.0, 640.0, "Final Remarks"),
        ]);
        let expected = format!("{body} ends here.");
        assert_eq!(texts(&blocks(&[p])), [("", expected.as_str()), ("", "Annex"), ("", "Final Remarks")]);
    }

    #[test]
    fn page_numbers_are_dropped() {
        for number in ["12", "-12-", "Page 3", "Page 3 of 40", "3 / 40"] {
            assert!(is_page_number(number), "{number}");
        }
        for text in ["Article 12", "2016/679 of the Council", "(a)", "(6)"] {
            assert!(!is_page_number(text), "{text}");
        }
    }

    #[test]
    fn labels_and_heading_shapes() {
        for label in ["(a)", "(98)", "1.", "iv)", "•"] {
            assert!(is_label(label), "{label}");
        }
        for text in ["(Text with EEA relevance)", "Article 1", "a"] {
            assert!(!is_label(text), "{text}");
        }
        for heading in ["CHAPTER III", "2.1 Scope", "Right to erasure (‘right to be forgotten’)"] {
            assert!(reads_like_heading(heading), "{heading}");
        }
        for text in ["Whereas:", "of 27 April 2016", "(a)", "The end.", "-3-"] {
            assert!(!reads_like_heading(text), "{text}");
        }
    }
}
