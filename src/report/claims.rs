//! The findings at the top of the page: each of the paper's claims in its words, the verdict, the
//! criterion and the table of the numbers that decide it (three significant digits).

use crate::error::Result;
use crate::findings::Claim;
use crate::plot::html::escape_html;
use crate::plot::table::{frame_to_html, TableStyle};

/// The "Findings" part of the page: every claim of `claims`.
pub(super) fn findings_html(claims: &[Claim]) -> Result<String> {
    let mut html = String::from(
        "<h2 id=\"findings\">Findings</h2>\n<p>Each of the paper's claims, checked against \
         the numbers of the sections below.</p>\n",
    );
    for c in claims {
        html += &claim_html(c)?;
    }
    Ok(html)
}

/// One claim on the page: its words, the verdict, the criterion, the table.
fn claim_html(claim: &Claim) -> Result<String> {
    let class = if claim.holds() {
        "claim-yes"
    } else {
        "claim-no"
    };
    Ok(format!(
        "<div class=\"claim\">\n<h3>{}</h3>\n<p class=\"source\">{}</p>\n\
         <p><b class=\"{class}\">{}</b>. Criterion: {}</p>\n{}\n</div>\n",
        escape_html(&claim.statement),
        escape_html(&format!("Source: {}.", claim.source)),
        capitalise(claim.verdict.text()),
        escape_html(&claim.criterion),
        frame_to_html(
            &claim.to_frame()?,
            &TableStyle::report("The numbers that decide it")
        ),
    ))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::claims::{claims, tests::headlines};

    #[test]
    fn claim_tables_read_with_three_digits() {
        let c = claims(&headlines());
        let html = claim_html(&c[3]).unwrap();
        assert!(html.contains("“have a significant bias for color and edges.”"));
        assert!(html.contains("Not supported"));
        assert!(html.contains("<td class=\"num\">-2.14</td>"), "{html}");
        assert!(html.contains("<td class=\"num\">-2.57</td>"));
        assert!(html.contains("<td>no</td>"));
        assert!(!html.contains("(\"instances\""), "no debug output");
        let all = findings_html(&c).unwrap();
        assert_eq!(all.matches("<div class=\"claim\">").count(), c.len());
    }
}
