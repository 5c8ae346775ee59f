//! Huffman code lengths as the official pipeline gets them from `dahuffman`
//! (`HuffmanCodec.from_data`), and the bit count the official code derives from them.
//!
//! `dahuffman` adds an end-of-file symbol of frequency 1 that sorts before every other symbol,
//! then merges the two smallest nodes until one is left; nodes are ordered by frequency, then by
//! the first symbol of their list (a merged node's list is the first node's symbols, then the
//! second's). Every merge lengthens the codes of both nodes' symbols by one bit. Since no two
//! nodes share a first symbol, the order is total, and any priority queue pops the same nodes in
//! the same order as Python's `heapq`. The bit count is Σ frequency × code length over the data's
//! symbols (the end-of-file symbol is not counted, as in `train_nerv_all.py`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The end-of-file symbol's sort key: before every byte.
const EOF: i32 = -1;

/// The code length of every byte value that occurs in `counts` (`counts[v]` = occurrences of v),
/// `None` for those that do not.
pub fn code_lengths(counts: &[u64; 256]) -> [Option<u32>; 256] {
    // Nodes: (frequency, first symbol) → the symbols under them.
    let mut members: Vec<Vec<i32>> = Vec::new();
    let mut heap = BinaryHeap::new();
    for (v, &c) in counts.iter().enumerate().filter(|(_, &c)| c > 0) {
        heap.push(Reverse((c, v as i32, members.len())));
        members.push(vec![v as i32]);
    }
    heap.push(Reverse((1, EOF, members.len())));
    members.push(vec![EOF]);
    let mut length = [0u32; 257];
    let slot = |s: i32| (s + 1) as usize;
    while heap.len() > 1 {
        let Reverse((fa, ka, a)) = heap.pop().expect("two nodes");
        let Reverse((fb, _, b)) = heap.pop().expect("two nodes");
        let mut merged = std::mem::take(&mut members[a]);
        merged.append(&mut members[b]);
        for &s in &merged {
            length[slot(s)] += 1;
        }
        heap.push(Reverse((fa + fb, ka, a)));
        members[a] = merged;
    }
    let mut out = [None; 256];
    for (v, &c) in counts.iter().enumerate() {
        if c > 0 {
            out[v] = Some(length[slot(v as i32)]);
        }
    }
    out
}

/// Σ frequency × code length over the values that occur: the bits the official code counts for
/// the Huffman-coded values.
pub fn coded_bits(counts: &[u64; 256]) -> u64 {
    let lengths = code_lengths(counts);
    counts
        .iter()
        .zip(lengths)
        .map(|(&c, l)| c * u64::from(l.unwrap_or(0)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(usize, u64)]) -> [u64; 256] {
        let mut c = [0u64; 256];
        for &(v, n) in pairs {
            c[v] = n;
        }
        c
    }

    #[test]
    fn code_lengths_by_hand() {
        // Frequencies a:5, b:2, c:1 and EOF:1. Merges: (EOF 1, c 1) → 2 [EOF, c]; then the
        // two nodes of frequency 2 are ordered by first symbol: [EOF, c] (EOF first) before b →
        // 4 [EOF, c, b]; then a:5 and that: lengths a 1, b 2, c 3, EOF 3.
        let c = counts(&[(7, 5), (8, 2), (9, 1)]);
        let l = code_lengths(&c);
        assert_eq!((l[7], l[8], l[9], l[0]), (Some(1), Some(2), Some(3), None));
        assert_eq!(coded_bits(&c), 5 + 2 * 2 + 3);
    }

    #[test]
    fn a_single_symbol_takes_one_bit() {
        // One symbol and EOF: one merge, one bit each.
        let c = counts(&[(0, 10)]);
        assert_eq!(code_lengths(&c)[0], Some(1));
        assert_eq!(coded_bits(&c), 10);
    }

    #[test]
    fn ties_between_symbols_go_to_the_smaller_symbol_first() {
        // Four symbols of frequency 4 and EOF: EOF merges with symbol 1 (the smallest of the
        // tied), giving 5; then 2 and 3 → 8; then (EOF, 1) 5 with 4 → 9; then 8 + 9. Lengths:
        // symbol 1 and EOF 3, symbol 4 2, symbols 2 and 3 2.
        let c = counts(&[(1, 4), (2, 4), (3, 4), (4, 4)]);
        let l = code_lengths(&c);
        assert_eq!(
            (l[1], l[2], l[3], l[4]),
            (Some(3), Some(2), Some(2), Some(2))
        );
        assert_eq!(coded_bits(&c), 4 * (3 + 2 + 2 + 2));
    }
}
