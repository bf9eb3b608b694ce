//! The report: a text summary (valid or not, with the counts) and an HTML page with an SVG
//! timeline of send latencies and the fault windows.
use std::fmt::Write;

use crate::checker::Analysis;
use crate::history::{F, Op, Type};

fn secs(us: u64) -> String {
    format!("{:.2}s", us as f64 / 1e6)
}

fn list(out: &mut String, name: &str, items: &[String]) {
    if !items.is_empty() {
        let _ = writeln!(out, "{name} ({}):", items.len());
        for i in items.iter().take(10) {
            let _ = writeln!(out, "  {i}");
        }
        if items.len() > 10 {
            let _ = writeln!(out, "  ... and {} more", items.len() - 10);
        }
    }
}

pub fn summary(a: &Analysis, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{title}");
    let _ = writeln!(s, "valid: {}", if a.valid { "YES" } else { "NO" });
    let _ = writeln!(
        s,
        "operations: {}  acknowledged: {}  failed: {}  indeterminate: {} ({} of them read)",
        a.operations, a.acknowledged, a.failed, a.indeterminate, a.indeterminate_read
    );
    let _ = writeln!(
        s,
        "lost: {} (before faults {}, within {}, after {}; never delivered to the group {})  unexpected: {}  duplicates in the log: {}",
        a.lost.len(),
        a.lost_before,
        a.lost_within,
        a.lost_after,
        a.lost_undelivered,
        a.unexpected.len(),
        a.duplicates.len()
    );
    let _ = writeln!(
        s,
        "offset errors: {}  order errors: {}  divergent-node findings: {}  ack safety: {}",
        a.offset_errors.len(),
        a.order_errors.len(),
        a.divergence.len(),
        match &a.ack_safety {
            None => "not applicable (no consumer group in this history)".to_string(),
            Some(e) => format!("{} violations", e.len()),
        }
    );
    let _ = writeln!(s, "distinct values read: {}", a.read);
    if let Some(c) = &a.consumption {
        let _ = writeln!(
            s,
            "group: receives: {}  deliveries: {} of {} values  redeliveries: {} ({} raced an OK ack)  acks: {} (ok {}, failed {}, indeterminate {})  acked values: {}",
            c.receives, c.deliveries, c.delivered, c.redeliveries, c.raced_acks, c.acks, c.acks_ok, c.acks_failed, c.acks_indeterminate, c.acked
        );
    }
    let _ = writeln!(
        s,
        "faults: {}  longest unavailability: {} (from t={})  windows >= 1s without an ack: {}",
        a.faults.len(),
        secs(a.longest_unavailable_us),
        secs(a.longest_unavailable_at),
        a.unavailable_windows.len()
    );
    for w in &a.faults {
        let _ = writeln!(s, "  fault {} .. {}  {}", secs(w.start), secs(w.end), w.what);
    }
    let lost: Vec<String> = a.lost.iter().map(|(v, p, loss)| format!("{v} ({p:?}, {loss:?})")).collect();
    list(&mut s, "LOST", &lost);
    list(&mut s, "UNEXPECTED", &a.unexpected);
    list(&mut s, "DUPLICATES", &a.duplicates);
    list(&mut s, "OFFSET ERRORS", &a.offset_errors);
    list(&mut s, "ORDER ERRORS", &a.order_errors);
    list(&mut s, "DIVERGENCE", &a.divergence);
    if let Some(e) = &a.ack_safety {
        list(&mut s, "ACK SAFETY", e);
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An HTML page: the summary and an SVG plot of every send's latency against its invoke time
/// (log scale; green ok, red fail, orange indeterminate), with fault windows shaded.
pub fn html(a: &Analysis, history: &[Op], title: &str) -> String {
    let (w, h, left, bottom, top) = (1200.0f64, 420.0f64, 60.0f64, 30.0f64, 10.0f64);
    let end = history.iter().map(|o| o.time).max().unwrap_or(1).max(1) as f64;
    let x = |t: u64| left + (t as f64 / end) * (w - left - 10.0);
    // latency axis: 1ms .. 20s log
    let (lo, hi) = (1e3f64.ln(), 2e7f64.ln());
    let y = |us: u64| {
        let v = (us.max(1000) as f64).ln().min(hi);
        top + (h - top - bottom) * (1.0 - (v - lo) / (hi - lo))
    };
    let mut svg = String::new();
    let _ = write!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#);
    for f in &a.faults {
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="#9999ff" fill-opacity="0.25"><title>{}</title></rect><text x="{:.1}" y="{}" fill="#333399">{}</text>"##,
            x(f.start),
            (x(f.end) - x(f.start)).max(1.0),
            h - top - bottom,
            esc(&f.what),
            x(f.start) + 2.0,
            top + 12.0,
            esc(f.what.split_whitespace().next().unwrap_or(""))
        );
    }
    for &(s, e) in &a.unavailable_windows {
        let _ = write!(svg, r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="4" fill="#cc0000"><title>no acknowledged send for {}</title></rect>"##, x(s), h - bottom + 2.0, (x(e) - x(s)).max(1.0), secs(e - s));
    }
    for (label, us) in [("1ms", 1_000u64), ("10ms", 10_000), ("100ms", 100_000), ("1s", 1_000_000), ("10s", 10_000_000)] {
        let _ = write!(svg, r##"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="4" y="{:.1}">{label}</text>"##, w - 10.0, y(us), y(us), y(us) + 4.0);
    }
    let step = ((end / 1e6 / 12.0).ceil() as u64).max(1);
    let mut t = 0u64;
    while (t * 1_000_000) as f64 <= end {
        let _ = write!(svg, r#"<text x="{:.1}" y="{}">{}s</text>"#, x(t * 1_000_000), h - 4.0, t);
        t += step;
    }
    let mut invokes = std::collections::HashMap::new();
    for op in history.iter().filter(|o| o.f == F::Send) {
        let Some(v) = op.value.as_deref() else { continue };
        if op.typ == Type::Invoke {
            invokes.insert(v, op.time);
        } else if let Some(&start) = invokes.get(v) {
            let color = match op.typ {
                Type::Ok => "#2a2",
                Type::Fail => "#d22",
                _ => "#f90",
            };
            let _ = write!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="{color}"/>"#, x(start), y(op.time.saturating_sub(start)));
        }
    }
    svg.push_str("</svg>");
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body style=\"font-family:sans-serif\">\
         <h2>{t}</h2><p>Send latency by invoke time (log scale): <span style=\"color:#2a2\">ok</span>, \
         <span style=\"color:#d22\">fail</span>, <span style=\"color:#f90\">indeterminate</span>; shaded: fault windows; \
         red bars: stretches of 1s or more without an acknowledged send.</p>{svg}<pre>{s}</pre></body></html>",
        t = esc(title),
        s = esc(&summary(a, title)),
    )
}
