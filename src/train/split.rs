//! The official seen/unseen frame split (`--data_split A_B_C`, `hnerv_utils.data_split`): of
//! every C consecutive frames, the first A are trained on and the last C − B are held out
//! (frames A..B of each group are in neither set). `1_1_1`, the default, trains on every frame.
//! The official `--shuffle_data` (a Python `random.Random` shuffle first) is not reproduced.

use crate::error::{Result, XincError};

/// A `--data_split A_B_C`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataSplit {
    pub valid_train: usize,
    pub total_train: usize,
    pub total: usize,
}

impl Default for DataSplit {
    /// `1_1_1`: every frame is trained on.
    fn default() -> Self {
        DataSplit {
            valid_train: 1,
            total_train: 1,
            total: 1,
        }
    }
}

impl DataSplit {
    /// The split of an official flag string (`--data_split A_B_C`), `1_1_1` when it has none;
    /// `--shuffle_data` is refused.
    pub fn from_official_args(args: &str) -> Result<Self> {
        let bad = |m: String| XincError::InvalidArgument(format!("--data_split: {m}"));
        let mut tokens = args.split_whitespace();
        let mut split = DataSplit::default();
        while let Some(t) = tokens.next() {
            match t {
                "--shuffle_data" => {
                    return Err(bad(
                        "--shuffle_data (Python's random shuffle) is not supported".into(),
                    ))
                }
                "--data_split" => {
                    let v = tokens
                        .next()
                        .ok_or_else(|| bad("takes one value A_B_C".into()))?;
                    let parts: Vec<usize> = v
                        .split('_')
                        .map(|p| p.parse().map_err(|_| bad(format!("`{v}` is not A_B_C"))))
                        .collect::<Result<_>>()?;
                    let [a, b, c] = parts[..] else {
                        return Err(bad(format!("`{v}` is not three numbers A_B_C")));
                    };
                    if a == 0 || a > b || b > c {
                        return Err(bad(format!("`{v}` needs 1 ≤ A ≤ B ≤ C")));
                    }
                    split = DataSplit {
                        valid_train: a,
                        total_train: b,
                        total: c,
                    };
                }
                _ => {}
            }
        }
        Ok(split)
    }

    /// `(trained, held out)` frame indices of a clip of `n` frames.
    pub fn apply(&self, n: usize) -> (Vec<usize>, Vec<usize>) {
        let mut seen = Vec::new();
        let mut unseen = Vec::new();
        for i in 0..n {
            let r = i % self.total;
            if r < self.valid_train {
                seen.push(i);
            } else if r >= self.total_train {
                unseen.push(i);
            }
        }
        (seen, unseen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_official_split_by_hand() {
        // 18_19_20 (the official help's example) on 41 frames: 0..18 and 20..38 and 40 are
        // trained on, 19 and 39 held out, 18 and 38 in neither.
        let s = DataSplit::from_official_args("--lr 1 --data_split 18_19_20").unwrap();
        let (seen, unseen) = s.apply(41);
        assert_eq!(unseen, [19, 39]);
        assert_eq!(seen.len(), 18 + 18 + 1);
        assert!(!seen.contains(&18) && !seen.contains(&38) && seen.contains(&40));
        assert_eq!(DataSplit::default().apply(3), (vec![0, 1, 2], vec![]));
        for bad in [
            "--data_split 2_1_3",
            "--data_split 1_2",
            "--data_split 0_1_1",
            "--shuffle_data",
        ] {
            assert!(DataSplit::from_official_args(bad).is_err(), "{bad}");
        }
    }
}
