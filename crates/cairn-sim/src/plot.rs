//! A hand-written SVG of a [`SimReport`]: P(loss) against the number of
//! failed nodes (one line per scheme), then load balance and repair
//! parallelism as bars.

use crate::SimReport;
use std::fmt::Write;

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];
const H: f64 = 440.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 370.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn text(out: &mut String, x: f64, y: f64, anchor: &str, size: u32, s: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}">{}</text>"#,
        esc(s)
    );
}

fn y_of(v: f64, max: f64) -> f64 {
    BOTTOM - (v / max).clamp(0.0, 1.0) * (BOTTOM - TOP)
}

/// Axes with horizontal grid lines at `ticks` (values up to `max`).
fn axes(
    out: &mut String,
    x0: f64,
    x1: f64,
    max: f64,
    ticks: &[f64],
    title: &str,
    fmt: &dyn Fn(f64) -> String,
) {
    text(out, (x0 + x1) / 2.0, TOP - 20.0, "middle", 15, title);
    for &t in ticks {
        let y = y_of(t, max);
        let _ = writeln!(
            out,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#ddd"/>"##
        );
        text(out, x0 - 6.0, y + 4.0, "end", 11, &fmt(t));
    }
    let _ = writeln!(
        out,
        r#"<polyline points="{x0:.1},{TOP:.1} {x0:.1},{BOTTOM:.1} {x1:.1},{BOTTOM:.1}" fill="none" stroke="black"/>"#
    );
}

/// Bars, one per scheme, with the value written above.
fn bars(out: &mut String, x0: f64, x1: f64, title: &str, values: &[(String, f64)], digits: usize) {
    let max = values.iter().map(|v| v.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let ticks: Vec<f64> = (0..=4).map(|i| max / 1.15 * i as f64 / 4.0).collect();
    axes(out, x0, x1, max, &ticks, title, &|t| {
        format!("{t:.digits$}")
    });
    let slot = (x1 - x0) / values.len().max(1) as f64;
    for (i, (name, v)) in values.iter().enumerate() {
        let x = x0 + slot * (i as f64 + 0.2);
        let w = slot * 0.6;
        let y = y_of(*v, max);
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"/>"#,
            BOTTOM - y,
            COLORS[i % COLORS.len()]
        );
        text(
            out,
            x + w / 2.0,
            y - 4.0,
            "middle",
            11,
            &format!("{v:.digits$}"),
        );
        text(out, x + w / 2.0, BOTTOM + 16.0, "middle", 11, name);
    }
}

/// The report as an SVG document.
pub fn svg(r: &SimReport) -> String {
    let mut out = String::new();
    let w = 1240.0;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{H}" viewBox="0 0 {w} {H}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    text(
        &mut out,
        w / 2.0,
        H - 12.0,
        "middle",
        12,
        &format!(
            "cairn simulate: {} nodes in {} zone(s), {} chunks, rep={}, {} trials per k, seed {}",
            r.nodes, r.zones, r.chunks, r.rep, r.trials, r.seed
        ),
    );

    // Panel 1: P(loss) against k, the ks evenly spaced.
    let (x0, x1) = (70.0, 560.0);
    axes(
        &mut out,
        x0,
        x1,
        1.0,
        &[0.0, 0.25, 0.5, 0.75, 1.0],
        "P(some chunk loses every copy) vs failed nodes k",
        &|t| format!("{t:.2}"),
    );
    let ks: Vec<usize> = r
        .results
        .first()
        .map(|s| s.failures.iter().map(|f| f.k).collect())
        .unwrap_or_default();
    let x_of = |i: usize| {
        if ks.len() <= 1 {
            (x0 + x1) / 2.0
        } else {
            x0 + 20.0 + (x1 - x0 - 40.0) * i as f64 / (ks.len() - 1) as f64
        }
    };
    for (i, k) in ks.iter().enumerate() {
        text(
            &mut out,
            x_of(i),
            BOTTOM + 16.0,
            "middle",
            11,
            &k.to_string(),
        );
    }
    text(&mut out, (x0 + x1) / 2.0, BOTTOM + 34.0, "middle", 12, "k");
    for (s, res) in r.results.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        let points: Vec<String> = res
            .failures
            .iter()
            .enumerate()
            .map(|(i, f)| format!("{:.1},{:.1}", x_of(i), y_of(f.p_loss, 1.0)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            points.join(" ")
        );
        for p in &points {
            let (x, y) = p.split_once(',').expect("x,y");
            let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
        }
        let ly = TOP + 8.0 + 16.0 * s as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/>"#,
            x0 + 12.0,
            x0 + 32.0
        );
        text(&mut out, x0 + 38.0, ly + 4.0, "start", 12, &res.scheme);
    }

    let names = |f: &dyn Fn(&crate::SchemeResult) -> f64| -> Vec<(String, f64)> {
        r.results.iter().map(|s| (s.scheme.clone(), f(s))).collect()
    };
    bars(
        &mut out,
        640.0,
        900.0,
        "load: max / mean chunks per node",
        &names(&|s| s.load.max_over_mean),
        2,
    );
    bars(
        &mut out,
        960.0,
        1220.0,
        "repair: peers per failed node",
        &names(&|s| s.repair.mean),
        0,
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{simulate, SimConfig};
    use cairn_types::PlaceScheme;

    #[test]
    fn the_plot_is_well_formed_svg_with_every_scheme() {
        let r = simulate(&SimConfig {
            nodes: 30,
            chunks: 500,
            trials: 50,
            failures: vec![2, 4],
            ec: Vec::new(),
            schemes: vec![PlaceScheme::Random, PlaceScheme::Buddy],
            ..SimConfig::default()
        })
        .unwrap();
        let s = svg(&r);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<svg").count(), 1);
        assert!(s.contains(">random<") && s.contains(">buddy<"));
        assert_eq!(s.matches("<polyline").count(), 3 + 2);
        assert!(!s.contains("NaN"));
    }
}
