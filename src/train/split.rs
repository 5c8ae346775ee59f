//! The official seen/unseen frame split (`--data_split A_B_C`, `hnerv_utils.data_split`): of
//! every C consecutive frames, the first A are trained on and the last C − B are held out
//! (frames A..B of each group are in neither set). `1_1_1`, the default, trains on every frame.
//! With `--shuffle_data` the frame indices are first shuffled as the official code shuffles them,
//! `random.Random(0).shuffle` ([`crate::train::py_random`], bit for bit), and the groups are taken
//! along the shuffled order. A frame keeps its own index t either way.

use crate::error::{Result, XincError};
use crate::train::py_random::PyRandom;

/// A `--data_split A_B_C`, with or without `--shuffle_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataSplit {
    pub valid_train: usize,
    pub total_train: usize,
    pub total: usize,
    /// Shuffle the frame indices first (`--shuffle_data`).
    pub shuffle: bool,
}

impl Default for DataSplit {
    /// `1_1_1`: every frame is trained on.
    fn default() -> Self {
        DataSplit {
            valid_train: 1,
            total_train: 1,
            total: 1,
            shuffle: false,
        }
    }
}

impl DataSplit {
    /// The seed of the official shuffle (`hnerv_utils.data_split(…, rand_num=0)`).
    pub const SHUFFLE_SEED: u64 = 0;

    /// The split of an official flag string (`--data_split A_B_C`, `--shuffle_data`), `1_1_1`
    /// unshuffled when it has neither.
    pub fn from_official_args(args: &str) -> Result<Self> {
        let bad = |m: String| XincError::InvalidArgument(format!("--data_split: {m}"));
        let mut tokens = args.split_whitespace();
        let mut split = DataSplit::default();
        let mut shuffle = false;
        while let Some(t) = tokens.next() {
            match t {
                "--shuffle_data" => shuffle = true,
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
                        shuffle: false,
                    };
                }
                _ => {}
            }
        }
        Ok(DataSplit { shuffle, ..split })
    }

    /// `(trained, held out)` frame indices of a clip of `n` frames, in the order of the walk
    /// (the shuffled order when shuffled).
    pub fn apply(&self, n: usize) -> (Vec<usize>, Vec<usize>) {
        let mut order: Vec<usize> = (0..n).collect();
        if self.shuffle {
            PyRandom::new(Self::SHUFFLE_SEED).shuffle(&mut order);
        }
        let mut seen = Vec::new();
        let mut unseen = Vec::new();
        for (position, frame) in order.into_iter().enumerate() {
            let r = position % self.total;
            if r < self.valid_train {
                seen.push(frame);
            } else if r >= self.total_train {
                unseen.push(frame);
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
        ] {
            assert!(DataSplit::from_official_args(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_shuffled_split_as_the_official_code() {
        // Python: l = list(range(10)); random.Random(0).shuffle(l) gives
        // [7, 8, 1, 5, 3, 4, 2, 0, 9, 6]; with 3_4_5 positions 0-2 and 5-7 train, 4 and 9 validate.
        let s = DataSplit::from_official_args("--shuffle_data --data_split 3_4_5").unwrap();
        assert!(s.shuffle);
        let (seen, unseen) = s.apply(10);
        assert_eq!(seen, [7, 8, 1, 4, 2, 0]);
        assert_eq!(unseen, [3, 6]);
    }
}
