//! The pickle machine's memory budget and its accounting.
//!
//! Random opcode streams, mutations of real checkpoint pickles, floods and bombs are parsed with
//! [`pickle::parse_audited`], which checks after every opcode that the bytes the machine has
//! counted equal the bytes its structures hold (every vector by capacity, every node's payload,
//! every memo entry) and, after a successful parse, the graph plus the returned tree. The tests
//! assert that each parse returns a value or a typed error (never panics) and that the accounted
//! peak never exceeds the budget: since the accounting is exact, the budget bounds the memory the
//! machine holds. (The hostile corpus measures the same from outside, as the peak RSS of
//! `xinc import` on 60 MB pickle floods.)

use std::io::Read;
use std::path::Path;

use proptest::prelude::*;
use xinc::io::pickle::{self, PickleErrorKind, Value};

/// What one parse did: its result and its accounted peak.
struct Measured {
    result: Result<Value, pickle::PickleError>,
    accounted: usize,
}

/// Parses `data` under `budget` with the accounting audited; checks the peak and the error.
fn check(data: &[u8], budget: usize) -> Measured {
    let (result, accounted) = pickle::parse_audited(data, budget);
    assert!(
        accounted <= budget,
        "accounted peak {accounted} over the budget {budget}"
    );
    if let Err(e) = &result {
        assert!(!e.reason.is_empty() && e.offset <= data.len(), "{e:?}");
    }
    Measured { result, accounted }
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pickles")
        .join(name)
}

/// The `data.pkl` of a checkpoint archive.
fn data_pkl(path: &Path) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let name = zip
        .file_names()
        .filter_map(Result::ok)
        .find(|n| n.ends_with("data.pkl"))
        .unwrap()
        .to_string();
    let mut bytes = Vec::new();
    zip.by_name(&name).unwrap().read_to_end(&mut bytes).unwrap();
    bytes
}

/// The pickles of the fixtures (and of the golden Lightning checkpoint, when present).
fn real_pickles() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = [
        "plain_state_dict.pt",
        "lightning_p2.ckpt",
        "lightning_p4.ckpt",
        "malicious.pt",
        "tiny_nerv.pth",
    ]
    .iter()
    .map(|n| (n.to_string(), data_pkl(&fixture(n))))
    .collect();
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/ffn_0005/best_model.ckpt");
    if golden.is_file() {
        out.push(("golden best_model.ckpt".into(), data_pkl(&golden)));
    }
    out
}

/// Opcodes and operand bytes a random stream is drawn from (every opcode the machine knows, a
/// few that it refuses, and small operands).
const ALPHABET: &[u8] = b"(.012FIJKLMNPQRSTUVXabcdeghjlpqrstu}])GBC\x80\x81\x82\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x00\x01\x02\x03\n";

fn random_stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![4 => prop::sample::select(ALPHABET), 1 => any::<u8>()],
        0..3000,
    )
}

/// A real pickle with a few bytes replaced, inserted or removed.
fn mutated_pickle() -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = real_pickles().into_iter().map(|(_, p)| p).collect();
    let edits = prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..8);
    (prop::sample::select(seeds), edits).prop_map(|(mut bytes, edits)| {
        for (at, kind, byte) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at.index(bytes.len());
            match kind {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, ALPHABET[byte as usize % ALPHABET.len()]),
                _ => drop(bytes.remove(at)),
            }
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// Random streams under a budget they often exceed.
    #[test]
    fn random_streams_stay_within_the_budget(data in random_stream(), budget in 4096usize..262_144) {
        check(&data, budget);
    }

    /// Mutated real pickles, under a tight and under the default budget.
    #[test]
    fn mutated_pickles_stay_within_the_budget(data in mutated_pickle(), budget in 4096usize..65_536) {
        check(&data, budget);
        check(&data, pickle::budget_for(data.len(), pickle::DEFAULT_BUDGET_CAP));
    }
}

#[test]
fn real_pickles_parse_well_within_their_default_budget() {
    for (name, data) in real_pickles() {
        let budget = pickle::budget_for(data.len(), pickle::DEFAULT_BUDGET_CAP);
        let m = check(&data, budget);
        assert!(m.result.is_ok(), "{name}: {:?}", m.result.err());
        // Real pickles need less than the budget's per-byte part (about 40 bytes per byte).
        assert!(
            m.accounted <= pickle::BUDGET_PER_BYTE * data.len() + (64 << 10),
            "{name}: {} accounted bytes for a pickle of {}",
            m.accounted,
            data.len()
        );
    }
}

#[test]
fn popped_values_are_freed() {
    // 2 million push/pop pairs, then a one-item list: the machine stays in a few KiB.
    let mut data = b"\x80\x02".to_vec();
    data.extend(b"K\x010".repeat(2_000_000));
    data.extend(b"]K\x07a.");
    let m = check(&data, 1 << 20);
    assert_eq!(m.result.unwrap(), Value::List(vec![Value::Int(7)]));
    assert!(m.accounted < 4096, "accounted {}", m.accounted);
    // 300,000 lists, each built, memoized, filled, replaced in the memo and popped.
    let mut data = b"\x80\x02".to_vec();
    data.extend(b"]q\x00K\x01aK\x02a0".repeat(300_000));
    data.extend(b"h\x00.");
    let m = check(&data, 1 << 20);
    assert_eq!(
        m.result.unwrap(),
        Value::List(vec![Value::Int(1), Value::Int(2)])
    );
    assert!(m.accounted < 4096, "accounted {}", m.accounted);
}

#[test]
fn floods_and_bombs_stop_at_the_budget() {
    let budget = 1 << 20;
    let pushes = [
        b"\x80\x02".to_vec(),
        b"K\x01".repeat(1_000_000),
        b".".to_vec(),
    ]
    .concat();
    let memo = [b"\x80\x04N".to_vec(), vec![0x94; 1_000_000], b".".to_vec()].concat();
    let mut bomb = b"]q\x00".to_vec();
    for level in 1..=40u8 {
        bomb.extend_from_slice(&[b'(', b'h', level - 1, b'h', level - 1, b'l', b'q', level]);
    }
    bomb.push(b'.');
    for (what, data) in [("pushes", pushes), ("memo", memo), ("bomb", bomb)] {
        let m = check(&data, budget);
        let e = m.result.expect_err(what);
        assert_eq!(e.kind, PickleErrorKind::OverBudget, "{what}: {e}");
        assert!(
            e.reason.contains("memory budget of 1048576 bytes"),
            "{what}: {e}"
        );
    }
    // Copying a 20,000-item list 2,000 times would copy 4·10^7 elements: beyond the work limit.
    let mut copies = b"\x80\x02]q\x00(K\x01".to_vec();
    copies.extend(vec![b'2'; 19_999]);
    copies.extend(b"ecbuiltins\nlist\nq\x01");
    copies.extend(b"h\x01h\x00\x85R0".repeat(2_000));
    copies.extend(b"N.");
    let e = check(&copies, budget).result.expect_err("copies");
    assert_eq!(e.kind, PickleErrorKind::OverBudget, "{e}");
    assert!(e.reason.contains("work limit"), "{e}");
}
