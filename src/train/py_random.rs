//! Python's `random.Random(seed).shuffle`, bit for bit, for the official frame split
//! (`data_split(…, shuffle_data=True, rand_num=0)` shuffles with it).
//!
//! CPython's generator is the 32-bit Mersenne Twister MT19937 (Matsumoto & Nishimura), seeded
//! from an integer by `init_by_array` over the integer's 32-bit words, least significant first
//! (one word 0 for seed 0). `getrandbits(k)` for k ≤ 32 is the top k bits of one output;
//! `randbelow(n)` draws `getrandbits(bit_length(n))` until the value is below n; `shuffle` swaps
//! item i with item `randbelow(i + 1)` for i from the last down to 1.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER: u32 = 0x8000_0000;
const LOWER: u32 = 0x7fff_ffff;

/// CPython's `random.Random`, as far as `shuffle` needs it.
#[derive(Clone)]
pub struct PyRandom {
    mt: [u32; N],
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> Self {
        let low = seed as u32;
        let high = (seed >> 32) as u32;
        let key: Vec<u32> = if high == 0 {
            vec![low]
        } else {
            vec![low, high]
        };
        Self::from_key(&key)
    }

    /// MT19937's `init_by_array`.
    fn from_key(key: &[u32]) -> Self {
        let mut mt = [0u32; N];
        mt[0] = 19_650_218;
        for i in 1..N {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
        PyRandom { mt, index: N }
    }

    /// The next 32-bit output (`genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn twist(&mut self) {
        let mag = |y: u32| if y & 1 == 1 { MATRIX_A } else { 0 };
        for k in 0..N {
            let y = (self.mt[k] & UPPER) | (self.mt[(k + 1) % N] & LOWER);
            self.mt[k] = self.mt[(k + M) % N] ^ (y >> 1) ^ mag(y);
        }
        self.index = 0;
    }

    /// A uniform integer in [0, n) as `Random._randbelow` draws it (n ≤ 2³²).
    fn below(&mut self, n: u64) -> u64 {
        assert!((1..=1 << 32).contains(&n), "randbelow({n}) beyond 32 bits");
        let bits = 64 - n.leading_zeros();
        loop {
            let r = u64::from(self.next_u32() >> (32 - bits));
            if r < n {
                return r;
            }
        }
    }

    /// `Random.shuffle` in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_mt19937_sequence() {
        // mt19937ar.out, the authors' test output for init_by_array({0x123, 0x234, 0x345, 0x456}).
        let mut r = PyRandom::from_key(&[0x123, 0x234, 0x345, 0x456]);
        let first: Vec<u32> = (0..5).map(|_| r.next_u32()).collect();
        assert_eq!(
            first,
            [1067595299, 955945823, 477289528, 4107218783, 4228976476]
        );
        // Output 1000 crosses a twist.
        let later = (5..1000).map(|_| r.next_u32()).last().unwrap();
        assert_eq!(later, 3460025646);
    }

    // Expected orders: CPython 3.11, `l = list(range(n)); random.Random(seed).shuffle(l)`.
    #[test]
    fn shuffles_as_cpython() {
        let shuffled = |n: usize, seed: u64| {
            let mut v: Vec<usize> = (0..n).collect();
            PyRandom::new(seed).shuffle(&mut v);
            v
        };
        assert_eq!(shuffled(10, 0), [7, 8, 1, 5, 3, 4, 2, 0, 9, 6]);
        assert_eq!(shuffled(7, 0), [4, 2, 1, 0, 5, 3, 6]);
        assert_eq!(shuffled(10, 1), [6, 8, 9, 7, 5, 3, 0, 4, 1, 2]);
    }
}
