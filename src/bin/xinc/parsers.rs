//! The value parsers of the command line: whole numbers within their limit
//! (`xinc::models::limits`), learning rates, sizes `HxW`, channel ranges `A:B`, and the names the
//! FFN flags give the configuration fields in messages.

use xinc::models::limits::{self, Limit};
use xinc::XincError;

/// How the FFN flags name the configuration fields they set.
pub fn ffn_flag(field: &'static str) -> String {
    match field {
        "layer_size" | "fourier_mapping_size" => "--width".to_string(),
        "data_shape" => "--size".to_string(),
        "num_frequencies" => "--frequencies".to_string(),
        "w0" => "--w0".to_string(),
        "w0_initial" => "--w0-initial".to_string(),
        other => other.to_string(),
    }
}

/// A clap parser of a whole-number flag in `min..=limit.max`: every numeric flag has an upper
/// limit ([`limits`]), checked before any work.
pub fn count(
    flag: &'static str,
    min: usize,
    limit: Limit,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s: &str| parse_count(flag, s, min, limit)
}

pub fn parse_count(field: &str, s: &str, min: usize, limit: Limit) -> Result<usize, String> {
    let digits = s.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` is not a whole number"));
    }
    // Digits beyond 64 bits are over every limit: say so instead of printing a wrapped value.
    let Ok(value) = digits.parse::<usize>() else {
        return Err(format!(
            "{field} = {digits} is more than the limit {} ({})",
            limit.max, limit.why
        ));
    };
    limit.check_range(field, value, min).map_err(message)?;
    Ok(value)
}

/// The message of a library error, without the `invalid argument:` prefix (clap adds its own).
pub fn message(e: XincError) -> String {
    match e {
        XincError::InvalidArgument(m) => m,
        other => other.to_string(),
    }
}

/// `--lr`: a finite learning rate in (0, 1].
pub fn learning_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    limits::check_learning_rate("--lr", v).map_err(message)?;
    Ok(v)
}

/// A fraction in [0, 1] (a finite number).
pub fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is not a fraction in [0, 1]"));
    }
    Ok(v)
}

/// A duration in seconds: positive and finite, at most 30 days.
pub fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v <= 30.0 * 86_400.0) {
        return Err(format!("{s} is not a duration in (0, 2592000] seconds"));
    }
    Ok(v)
}

/// `HxW`, each side from 1 to [`limits::IMAGE_SIDE`].
pub fn parse_size(s: &str) -> Result<[usize; 2], String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}` is not HxW"))?;
    Ok([
        parse_count("height", h, 1, limits::IMAGE_SIDE)?,
        parse_count("width", w, 1, limits::IMAGE_SIDE)?,
    ])
}

/// `A:B`, a non-empty range of input channels within [`limits::NERV_CHANNELS`].
pub fn parse_range(s: &str) -> Result<std::ops::Range<usize>, String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not A:B"))?;
    let start = parse_count("A", a, 0, limits::NERV_CHANNELS)?;
    let end = parse_count("B", b, 1, limits::NERV_CHANNELS)?;
    if start >= end {
        return Err(format!("`{s}` is empty: A must be less than B"));
    }
    Ok(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_flags_are_bounded() {
        assert_eq!(parse_size("128x256"), Ok([128, 256]));
        assert_eq!(parse_size("8192X1"), Ok([8192, 1]));
        for (bad, expected) in [
            ("12", "`12` is not HxW"),
            ("0x4", "height = 0 is less than 1"),
            ("4x8193", "width = 8193 is more than the limit 8192"),
            ("4x-1", "`-1` is not a whole number"),
            (
                "99999999999999999999x4",
                "height = 99999999999999999999 is more than the limit",
            ),
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains(expected), "{bad}: {e}");
        }
        let iters = count("--iters", 1, limits::STEPS);
        assert_eq!(iters("1000"), Ok(1000));
        assert!(iters("1e3")
            .unwrap_err()
            .contains("`1e3` is not a whole number"));
        assert!(iters("0")
            .unwrap_err()
            .contains("--iters = 0 is less than 1"));
        assert_eq!(parse_range("2:5"), Ok(2..5));
        assert!(parse_range("5:5")
            .unwrap_err()
            .contains("A must be less than B"));
        assert!(parse_range("0:20000")
            .unwrap_err()
            .contains("B = 20000 is more than"));
        assert_eq!(learning_rate("9e-4"), Ok(9e-4));
        for bad in ["nan", "inf", "1e400", "0", "-1", "2"] {
            assert!(learning_rate(bad).is_err(), "{bad}");
        }
    }
}
