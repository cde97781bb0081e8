//! The report's one document model, rendered to Markdown and to self-contained HTML.
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// A piece of the report, rendered to both Markdown and HTML.
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
            Block::Heading(t) if first => {
                let _ = writeln!(md, "# {t}\n");
                first = false;
            }
            Block::Heading(t) => {
                let _ = writeln!(md, "## {t}\n");
            }
            Block::Paragraph(t) => {
                let _ = writeln!(md, "{t}\n");
            }
            Block::Table(headers, rows) => {
                let _ = writeln!(md, "| {} |", headers.join(" | "));
                let _ = writeln!(md, "|{}|", vec!["---"; headers.len()].join("|"));
                for row in rows {
                    let _ = writeln!(md, "| {} |", row.join(" | "));
                }
                md.push('\n');
            }
            Block::Figure(name, caption) => {
                let _ = writeln!(md, "![{caption}](plots/{name}.svg)\n\n*{caption}*\n");
            }
        }
    }
    md
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Light emphasis: `**bold**` and `*italic*` as the Markdown shows them.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(text).split("**").enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<strong>{part}</strong>");
        } else {
            for (j, p) in part.split('*').enumerate() {
                if j % 2 == 1 {
                    let _ = write!(out, "<em>{p}</em>");
                } else {
                    out.push_str(p);
                }
            }
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}\
th{background:#f3f3f3}figure{margin:1.5em 0}figcaption{font-style:italic;color:#555}svg{max-width:100%;height:auto}";

pub fn to_html(blocks: &[Block], out: &Path) -> Result<String> {
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>shallow report</title><style>{STYLE}</style></head><body>\n"
    );
    let mut first = true;
    for b in blocks {
        match b {
            Block::Heading(t) => {
                let level = if first { 1 } else { 2 };
                first = false;
                let _ = writeln!(html, "<h{level}>{}</h{level}>", escape(t));
            }
            Block::Paragraph(t) => {
                let _ = writeln!(html, "<p>{}</p>", inline(t));
            }
            Block::Table(headers, rows) => {
                html.push_str("<table><thead><tr>");
                for h in headers {
                    let _ = write!(html, "<th>{}</th>", escape(h));
                }
                html.push_str("</tr></thead><tbody>\n");
                for row in rows {
                    html.push_str("<tr>");
                    for cell in row {
                        let _ = write!(html, "<td>{}</td>", escape(cell));
                    }
                    html.push_str("</tr>\n");
                }
                html.push_str("</tbody></table>\n");
            }
            Block::Figure(name, caption) => {
                let path = out.join("plots").join(format!("{name}.svg"));
                let svg = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let svg = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
                let _ = writeln!(
                    html,
                    "<figure>{svg}<figcaption>{}</figcaption></figure>",
                    escape(caption)
                );
            }
        }
    }
    html.push_str("</body></html>\n");
    Ok(html)
}
