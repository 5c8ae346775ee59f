//! How a finding quotes a number: to a few significant digits, for reading. The claims' criteria
//! use it, and so does every table of the report's page ([`crate::plot::table`]), so that a number
//! reads the same in both.

/// `v` to `digits` significant digits, for reading: plain notation for 10⁻³ ≤ |v| < 10⁶
/// (`9312.894231` → `9310`, `0.012345` → `0.0123`), scientific otherwise (`1.23e-5`), trailing
/// zeros after the point dropped; `NaN`, `inf`, `-inf` as such.
pub(crate) fn format_significant(v: f64, digits: usize) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    let digits = digits.max(1);
    // The exponent after rounding (9.996 to 3 digits is 10.0, exponent 1).
    let sci = format!("{:.*e}", digits - 1, v);
    let exp: i32 = sci[sci.find('e').map_or(sci.len(), |i| i + 1)..]
        .parse()
        .unwrap_or(0);
    if !(-3..6).contains(&exp) {
        let (mantissa, _) = sci.split_at(sci.find('e').unwrap_or(sci.len()));
        return format!("{}e{exp}", trim_zeros(mantissa));
    }
    let decimals = (digits as i32 - 1 - exp).max(0) as usize;
    let scale = 10f64.powi(exp - (digits as i32 - 1));
    let rounded = (v / scale).round() * scale;
    trim_zeros(&format!("{rounded:.decimals$}"))
}

/// `1.500` → `1.5`, `2.000` → `2`; text without a point is left alone.
fn trim_zeros(text: &str) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_digits_for_reading() {
        let cases = [
            (9312.894231, "9310"),
            (-2.0, "-2"),
            (0.012345, "0.0123"),
            (0.001, "0.001"),
            (0.000123456, "1.23e-4"),
            (1.5, "1.5"),
            (9.996, "10"),
            (999_999.0, "1e6"),
            (123_456.0, "123000"),
            (-2.565405758354497, "-2.57"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-inf"),
            (0.0, "0"),
        ];
        for (v, want) in cases {
            assert_eq!(format_significant(v, 3), want, "{v}");
        }
        assert_eq!(format_significant(0.26464829, 4), "0.2646");
    }
}
