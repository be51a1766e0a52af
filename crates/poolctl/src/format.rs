//! Number formats and hand-aligned tables for terminal output.

use std::fmt::Write as _;

/// `4773` → `4,773`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds as milliseconds the way the seed line shows them: `969ms`; one decimal below
/// 10 ms (`2.5ms`), two below 1 ms (`0.35ms`).
pub(crate) fn ms(secs: f64) -> String {
    let ms = secs * 1e3;
    if ms >= 10.0 {
        format!("{ms:.0}ms")
    } else if ms >= 1.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.2}ms")
    }
}

/// A 0–1 ratio as a percentage with one decimal: `79.5%`.
pub(crate) fn pct(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// A table with a header row, columns padded to the widest cell (numbers right-aligned).
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let numeric = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '-')
    };
    // A column is right-aligned when every cell in it is a number.
    let right: Vec<bool> = (0..widths.len())
        .map(|i| i > 0 && rows.iter().all(|r| r.get(i).is_some_and(|c| numeric(c))))
        .collect();
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let pad = w.saturating_sub(cell.chars().count());
            if right[i] {
                l.push_str(&" ".repeat(pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.push_str(&" ".repeat(pad));
            }
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(headers.to_vec());
    line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// "1 instance", "3 instances".
pub(crate) fn instances(n: impl Into<i64>) -> String {
    let n = n.into();
    if n == 1 {
        "1 instance".to_owned()
    } else {
        format!("{n} instances")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_formats() {
        assert_eq!(thousands(4773), "4,773");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(0), "0");
        assert_eq!(ms(0.969), "969ms");
        assert_eq!(ms(0.0025), "2.5ms");
        assert_eq!(ms(0.00035), "0.35ms");
        assert_eq!(pct(0.795), "79.5%");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["pool", "size"],
            &[
                vec!["a".into(), "5".into()],
                vec!["long".into(), "20".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "pool  size");
        assert_eq!(lines[2], "a        5");
        assert_eq!(lines[3], "long    20");
    }
}
