//! The report's document model, written as Markdown; the HTML is that Markdown rendered by
//! `pulldown-cmark`, with every figure's image replaced by its SVG inline so that the file is
//! self-contained. One renderer, so the two cannot drift apart.
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};

/// A piece of the report. Paragraph text is Markdown (`**bold**`, `*italic*`); table cells and
/// headings are plain text.
pub enum Block {
    Heading(String),
    Paragraph(String),
    Table(Vec<String>, Vec<Vec<String>>),
    Figure(String, String),
}

pub fn to_markdown(blocks: &[Block]) -> String {
    let mut md = String::new();
    let mut first = true;
    for b in blocks {
        match b {
            Block::Heading(t) => {
                let level = if first { "#" } else { "##" };
                first = false;
                let _ = writeln!(md, "{level} {}\n", plain(t));
            }
            Block::Paragraph(t) => {
                let _ = writeln!(md, "{t}\n");
            }
            Block::Table(headers, rows) => {
                let _ = writeln!(md, "| {} |", cells(headers));
                let _ = writeln!(md, "|{}|", vec!["---"; headers.len()].join("|"));
                for row in rows {
                    let _ = writeln!(md, "| {} |", cells(row));
                }
                md.push('\n');
            }
            Block::Figure(name, caption) => {
                let caption = plain(caption);
                let _ = writeln!(md, "![{caption}](plots/{name}.svg)\n\n*{caption}*\n");
            }
        }
    }
    md
}

/// Text that Markdown must show as written: its punctuation escaped.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '!'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn cells(row: &[String]) -> String {
    row.iter().map(|c| plain(c)).collect::<Vec<_>>().join(" | ")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}\
th{background:#f3f3f3}p>svg{display:block;margin:1.5em 0}svg{max-width:100%;height:auto}";

/// Renders the report's Markdown as one HTML page; images under `out` are inlined.
pub fn to_html(markdown: &str, out: &Path) -> Result<String> {
    let mut events = Vec::new();
    let mut in_image = false;
    for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Image { dest_url, .. }) => {
                events.push(Event::Html(CowStr::from(inline_svg(out, &dest_url)?)));
                in_image = true;
            }
            Event::End(TagEnd::Image) => in_image = false,
            _ if in_image => {}
            other => events.push(other),
        }
    }
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>shallow report</title><style>{STYLE}</style></head><body>\n"
    );
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    html.push_str("</body></html>\n");
    Ok(html)
}

fn inline_svg(out: &Path, relative: &str) -> Result<String> {
    let path = out.join(relative);
    let svg = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(svg
        .find("<svg")
        .map_or(svg.clone(), |i| svg[i..].to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_html_show_the_same_text() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("plots")).unwrap();
        std::fs::write(
            tmp.path().join("plots/f.svg"),
            "<?xml version=\"1.0\"?>\n<svg id=\"f\"></svg>",
        )
        .unwrap();
        let blocks = [
            Block::Heading("Report on a_b.db".into()),
            Block::Paragraph("**Verdict**: p < 0.05, *n* = 3".into()),
            Block::Table(
                vec!["bin".into(), "|Δ|".into()],
                vec![vec!["[0,1)".into(), "a*b_c".into()]],
            ),
            Block::Figure("f".into(), "Loss [nats] per *pair*".into()),
        ];
        let md = to_markdown(&blocks);
        assert!(md.contains("| \\[0,1) | a\\*b\\_c |"), "{md}");
        let html = to_html(&md, tmp.path()).unwrap();
        for expected in [
            "<h1>Report on a_b.db</h1>",
            "<strong>Verdict</strong>: p &lt; 0.05, <em>n</em> = 3",
            "<th>|Δ|</th>",
            "<td>[0,1)</td><td>a*b_c</td>",
            "<svg id=\"f\"></svg>",
            "<em>Loss [nats] per *pair*</em>",
        ] {
            assert!(html.contains(expected), "{expected} in {html}");
        }
        assert!(!html.contains("<img") && !html.contains("<?xml"));
    }

    #[test]
    fn a_missing_figure_names_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let md = to_markdown(&[Block::Figure("gone".into(), "x".into())]);
        let err = format!("{:#}", to_html(&md, tmp.path()).unwrap_err());
        assert!(err.contains("plots/gone.svg"), "{err}");
    }
}
