//! Hostile checkpoints: PyTorch zip/pickle files and safetensors files given to `xinc import`.
//!
//! Every input is crafted here: pickles byte by byte, archives with the `zip` crate (some size
//! fields patched afterwards so that they lie), safetensors headers as text. They are imported
//! with `xinc import ffn` (a 3-layer FFN of width 8 with 4 Fourier features, its architecture
//! inferred from the shapes) or `xinc import nerv` (the 2-block NeRV of
//! `tests/fixtures/pickles/tiny_nerv.pth`), and must fail before reading, inflating or building
//! anything the model does not need.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

use crate::harness::Case;

/// `xinc import ffn` of `{work}/w`.
const FFN: &[&str] = &[
    "import",
    "ffn",
    "--checkpoint",
    "{work}/w",
    "--size",
    "4x4",
    "--out",
    "{out}",
];
/// The architecture of `tiny_nerv.pth`.
const TINY_NERV_ARGS: &str = "--embed pe_1.25_4 --fc_hw 1_2 --dec_strds 2 2 --ks 0_3_3 \
    --reduce 1.2 --modelsize 0.0005 --lower_width 2";
/// `xinc import nerv` of `{work}/w`.
const NERV: &[&str] = &[
    "import",
    "nerv",
    "--checkpoint",
    "{work}/w",
    "--frames",
    "5",
    "--args",
    TINY_NERV_ARGS,
    "--out",
    "{out}",
];

/// The tensors of the FFN that `FFN` imports.
const FFN_SPECS: [(&str, &[usize]); 7] = [
    ("positional_encoding.B", &[4, 2]),
    ("net.0.linear.weight", &[8, 8]),
    ("net.0.linear.bias", &[8]),
    ("net.1.linear.weight", &[8, 8]),
    ("net.1.linear.bias", &[8]),
    ("net.2.linear.weight", &[3, 8]),
    ("net.2.linear.bias", &[3]),
];
/// The tensors of the NeRV that `NERV` imports.
const NERV_SPECS: [(&str, &[usize]); 8] = [
    ("decoder.0.conv.downconv.weight", &[4, 8, 1, 1]),
    ("decoder.0.conv.downconv.bias", &[4]),
    ("decoder.1.conv.upconv.0.weight", &[8, 2, 3, 3]),
    ("decoder.1.conv.upconv.0.bias", &[8]),
    ("decoder.2.conv.upconv.0.weight", &[8, 2, 3, 3]),
    ("decoder.2.conv.upconv.0.bias", &[8]),
    ("head_layer.weight", &[3, 2, 3, 3]),
    ("head_layer.bias", &[3]),
];

// ---------------------------------------------------------------------------------- pickles

/// One tensor of a crafted state dict: `_rebuild_tensor_v2` (or `_v3` with `dtype`) of a view
/// of storage `key`.
#[derive(Clone)]
struct T {
    name: String,
    storage: String,
    key: String,
    numel: usize,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
    dtype: Option<&'static str>,
}

impl T {
    /// A contiguous float tensor owning storage `key`.
    fn new(name: &str, key: &str, shape: &[usize]) -> T {
        T {
            name: name.into(),
            storage: "FloatStorage".into(),
            key: key.into(),
            numel: shape.iter().product(),
            offset: 0,
            shape: shape.to_vec(),
            stride: row_major(shape),
            dtype: None,
        }
    }

    fn storage(mut self, ty: &str) -> T {
        self.storage = ty.into();
        self
    }

    fn view(mut self, numel: usize, offset: usize) -> T {
        self.numel = numel;
        self.offset = offset;
        self
    }

    fn bytes_per_element(&self) -> usize {
        match self.storage.as_str() {
            "ByteStorage" | "CharStorage" | "BoolStorage" => 1,
            "DoubleStorage" | "LongStorage" => 8,
            _ => 4,
        }
    }
}

fn row_major(shape: &[usize]) -> Vec<usize> {
    let mut stride = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * shape[i + 1];
    }
    stride
}

/// `BINUNICODE`.
fn unicode(text: &str) -> Vec<u8> {
    [
        &[b'X'][..],
        &(text.len() as u32).to_le_bytes(),
        text.as_bytes(),
    ]
    .concat()
}

/// `BININT` below 2^31, else `LONG1` of 9 bytes.
fn int(n: usize) -> Vec<u8> {
    match i32::try_from(n) {
        Ok(small) => [&[b'J'][..], &small.to_le_bytes()].concat(),
        Err(_) => [&[0x8a, 9][..], &(n as u64).to_le_bytes(), &[0]].concat(),
    }
}

/// Protocol-0 `GLOBAL`.
fn global(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}

fn int_tuple(values: &[usize]) -> Vec<u8> {
    let mut out = vec![b'('];
    values.iter().for_each(|&v| out.extend(int(v)));
    out.push(b't');
    out
}

/// An empty `OrderedDict()`.
fn ordered_dict() -> Vec<u8> {
    [global("collections", "OrderedDict"), b")R".to_vec()].concat()
}

fn tensor(t: &T) -> Vec<u8> {
    let rebuild = if t.dtype.is_some() {
        "_rebuild_tensor_v3"
    } else {
        "_rebuild_tensor_v2"
    };
    let mut out = global("torch._utils", rebuild);
    out.extend(b"((");
    out.extend(unicode("storage"));
    out.extend(global("torch", &t.storage));
    out.extend(unicode(&t.key));
    out.extend(unicode("cpu"));
    out.extend(int(t.numel));
    out.extend(b"tQ");
    out.extend(int(t.offset));
    out.extend(int_tuple(&t.shape));
    out.extend(int_tuple(&t.stride));
    out.push(0x89);
    out.extend(ordered_dict());
    if let Some(dtype) = t.dtype {
        out.extend(global("torch", dtype));
    }
    out.extend(b"tR");
    out
}

/// A protocol-2 pickle of `OrderedDict(name -> tensor)`.
fn state_dict(tensors: &[T]) -> Vec<u8> {
    let mut out = b"\x80\x02".to_vec();
    out.extend(ordered_dict());
    for t in tensors {
        out.extend(unicode(&t.name));
        out.extend(tensor(t));
        out.push(b's');
    }
    out.push(b'.');
    out
}

/// Small finite values for `numel` elements of `bytes_per_element` bytes.
fn values(numel: usize, bytes_per_element: usize) -> Vec<u8> {
    (0..numel)
        .flat_map(|i| {
            let v = ((i % 7) as f32 - 3.0) * 0.1;
            match bytes_per_element {
                1 => vec![(i % 200) as u8],
                8 => f64::from(v).to_le_bytes().to_vec(),
                _ => v.to_le_bytes().to_vec(),
            }
        })
        .collect()
}

fn ffn_tensors(prefix: &str) -> Vec<T> {
    FFN_SPECS
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| T::new(&format!("{prefix}{name}"), &i.to_string(), shape))
        .collect()
}

fn nerv_tensors() -> Vec<T> {
    NERV_SPECS
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| T::new(name, &i.to_string(), shape))
        .collect()
}

// ---------------------------------------------------------------------------------- archives

/// The bytes of one archive entry, written in pieces (a repeated unit streams gigabytes).
#[derive(Clone)]
enum Data {
    Bytes(Vec<u8>),
    Repeat {
        head: Vec<u8>,
        unit: Vec<u8>,
        count: usize,
        tail: Vec<u8>,
    },
}

fn zeros(bytes: usize) -> Data {
    Data::Repeat {
        head: Vec::new(),
        unit: vec![0; 1 << 20],
        count: bytes >> 20,
        tail: Vec::new(),
    }
}

/// Writes a zip archive of `(name, data, deflated)` entries.
fn write_zip(path: &Path, entries: &[(String, Data, bool)]) {
    let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
    for (name, data, deflated) in entries {
        let options = if *deflated {
            SimpleFileOptions::default()
                .compression_method(CompressionMethod::Deflated)
                .compression_level(Some(1))
        } else {
            SimpleFileOptions::default().compression_method(CompressionMethod::Stored)
        };
        zip.start_file(name.as_str(), options).unwrap();
        match data {
            Data::Bytes(bytes) => zip.write_all(bytes).unwrap(),
            Data::Repeat {
                head,
                unit,
                count,
                tail,
            } => {
                zip.write_all(head).unwrap();
                for _ in 0..*count {
                    zip.write_all(unit).unwrap();
                }
                zip.write_all(tail).unwrap();
            }
        }
    }
    zip.finish().unwrap();
}

/// The storages of `tensors` (one entry per key, sized by the first tensor that names it).
fn storages(tensors: &[T]) -> Vec<(String, Data, bool)> {
    let mut seen = std::collections::HashSet::new();
    tensors
        .iter()
        .filter(|t| seen.insert(t.key.clone()))
        .map(|t| {
            let name = format!("archive/data/{}", t.key);
            (
                name,
                Data::Bytes(values(t.numel, t.bytes_per_element())),
                false,
            )
        })
        .collect()
}

/// A `torch.save` archive holding `pickle` and `storages`.
fn write_checkpoint(
    path: &Path,
    pickle: Data,
    deflated: bool,
    storages: Vec<(String, Data, bool)>,
) {
    let mut entries = vec![
        ("archive/data.pkl".to_string(), pickle, deflated),
        (
            "archive/byteorder".to_string(),
            Data::Bytes(b"little".to_vec()),
            false,
        ),
    ];
    entries.extend(storages);
    entries.push((
        "archive/version".into(),
        Data::Bytes(b"3\n".to_vec()),
        false,
    ));
    write_zip(path, &entries);
}

/// A checkpoint of the state dict `tensors`, each storage holding what its tensors view.
fn checkpoint_of(tensors: Vec<T>) -> impl Fn(&Path) + Send + Sync + 'static {
    move |w: &Path| {
        let pickle = Data::Bytes(state_dict(&tensors));
        write_checkpoint(&w.join("w"), pickle, false, storages(&tensors))
    }
}

/// A checkpoint whose `data.pkl` is the deflated stream `head`, `count` × `unit`, `tail`.
fn pickle_stream(
    head: &[u8],
    unit: &[u8],
    count: usize,
    tail: &[u8],
) -> impl Fn(&Path) + Send + Sync {
    let data = Data::Repeat {
        head: head.to_vec(),
        unit: unit.repeat(1 << 12),
        count: count >> 12,
        tail: tail.to_vec(),
    };
    move |w: &Path| write_checkpoint(&w.join("w"), data.clone(), true, Vec::new())
}

/// A checkpoint whose `data.pkl` is `pickle` (no storages).
fn pickle_only(pickle: Vec<u8>) -> impl Fn(&Path) + Send + Sync {
    move |w: &Path| write_checkpoint(&w.join("w"), Data::Bytes(pickle.clone()), false, Vec::new())
}

/// Rewrites the uncompressed size that the local header and the central directory declare for
/// entry `name` (a lie, for stored entries whose real size is the compressed size).
fn patch_declared_size(path: &Path, name: &str, size: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    let mut patched = 0;
    for (signature, size_at, name_len_at, name_at) in
        [(b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)]
    {
        let mut i = 0;
        while i + name_at <= bytes.len() {
            if &bytes[i..i + 4] == signature {
                let len = u16::from_le_bytes([bytes[i + name_len_at], bytes[i + name_len_at + 1]]);
                if bytes.get(i + name_at..i + name_at + len as usize) == Some(name.as_bytes()) {
                    bytes[i + size_at..i + size_at + 4].copy_from_slice(&size.to_le_bytes());
                    patched += 1;
                }
            }
            i += 1;
        }
    }
    assert_eq!(patched, 2, "entry {name} not found twice");
    std::fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------------------------- safetensors

/// A safetensors file of `header` (JSON text, its length taken as is) and `data`.
fn safetensors_raw(header: &str, declared_len: u64, data: &[u8]) -> Vec<u8> {
    [&declared_len.to_le_bytes()[..], header.as_bytes(), data].concat()
}

/// A well-formed safetensors file of F32 `tensors` (name, shape, values).
fn safetensors(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut header = Vec::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let begin = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.push(format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":{shape:?},\"data_offsets\":[{begin},{}]}}",
            data.len()
        ));
    }
    let header = format!("{{{}}}", header.join(","));
    safetensors_raw(&header, header.len() as u64, &data)
}

fn ffn_safetensors(prefix: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    FFN_SPECS
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            (format!("{prefix}{name}"), shape.to_vec(), vec![0.25; n])
        })
        .collect()
}

fn write(name: &'static str, bytes: Vec<u8>) -> impl Fn(&Path) + Send + Sync {
    move |w: &Path| std::fs::write(w.join(name), &bytes).unwrap()
}

// ---------------------------------------------------------------------------------- cases

fn with_checkpoint(args: &[&str], file: &str) -> Vec<String> {
    args.iter().map(|a| a.replace("{work}/w", file)).collect()
}

pub fn cases() -> Vec<Case> {
    let mut cases = special_files();
    cases.extend(pickle_floods_and_bombs());
    cases.extend(archives_and_storages());
    cases.extend(meaning());
    cases.extend(safetensors_cases());
    cases
}

/// Paths that are not regular files, and files that are not archives.
fn special_files() -> Vec<Case> {
    let ffn_dev_zero = with_checkpoint(FFN, "/dev/zero");
    let nerv_dev_zero = with_checkpoint(NERV, "/dev/zero");
    let fifo = |w: &Path| {
        let c = std::ffi::CString::new(w.join("w").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    };
    let legacy = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.".to_vec();
    vec![
        Case::new(
            "import ffn: weights file is a directory",
            FFN,
            &["w", "directory"],
            |w| std::fs::create_dir(w.join("w")).unwrap(),
        ),
        Case::new(
            "import ffn: /dev/zero",
            &ffn_dev_zero.iter().map(String::as_str).collect::<Vec<_>>(),
            &["/dev/zero", "it is a device, not a regular file"],
            |_| {},
        ),
        Case::new(
            "import ffn: a symlink to /dev/zero",
            FFN,
            &["/w:", "it is a device, not a regular file"],
            |w| std::os::unix::fs::symlink("/dev/zero", w.join("w")).unwrap(),
        ),
        Case::new(
            "import ffn: a named pipe (no writer: would block on open)",
            FFN,
            &["/w:", "it is a named pipe"],
            fifo,
        ),
        Case::new(
            "import nerv: /dev/zero",
            &nerv_dev_zero.iter().map(String::as_str).collect::<Vec<_>>(),
            &["/dev/zero", "it is a device"],
            |_| {},
        ),
        Case::new(
            "import nerv: a symlink to a named pipe",
            NERV,
            &["/w:", "it is a named pipe"],
            |w| {
                let c = std::ffi::CString::new(w.join("p").to_str().unwrap()).unwrap();
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
                std::os::unix::fs::symlink(w.join("p"), w.join("w")).unwrap();
            },
        ),
        Case::new(
            "import ffn: an empty file",
            FFN,
            &["the file is empty"],
            write("w", vec![]),
        ),
        Case::new(
            "import ffn: random bytes",
            FFN,
            &["neither a torch.save zip archive nor a safetensors file"],
            write(
                "w",
                (0..4096u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                    .collect(),
            ),
        ),
        Case::new(
            "import ffn: a legacy (torch < 1.6) torch.save file",
            FFN,
            &["neither a torch.save zip archive", "legacy"],
            write("w", legacy),
        ),
        Case::new(
            "import ffn: a zip archive truncated at 60 %",
            FFN,
            &["/w: cannot read checkpoint: truncated or corrupt zip archive ("],
            |w| {
                checkpoint_of(ffn_tensors(""))(w);
                let bytes = std::fs::read(w.join("w")).unwrap();
                std::fs::write(w.join("w"), &bytes[..bytes.len() * 6 / 10]).unwrap();
            },
        ),
        Case::new(
            "import ffn: a zip archive without data.pkl",
            FFN,
            &["no data.pkl entry in the zip archive"],
            |w| {
                let entry = (
                    "archive/version".to_string(),
                    Data::Bytes(b"3\n".to_vec()),
                    false,
                );
                write_zip(&w.join("w"), &[entry]);
            },
        ),
    ]
}

/// Pickles that would take gigabytes, minutes or a stack overflow to decode naively.
fn pickle_floods_and_bombs() -> Vec<Case> {
    // a list of 200,000 references, and `list(l)` repeated 100,000 times (2·10^10 copies)
    let mut quadratic_list = b"\x80\x02]q\x00(K\x01".to_vec();
    quadratic_list.extend(vec![b'2'; 199_999]);
    quadratic_list.push(b'e');
    quadratic_list.extend(global("builtins", "list"));
    quadratic_list.extend(b"q\x01");
    quadratic_list.extend(b"h\x01h\x00\x85R0".repeat(100_000));
    quadratic_list.extend(b"}.");
    // the same with dict(d)
    let mut quadratic_dict = b"\x80\x02}q\x00(".to_vec();
    for i in 0..100_000usize {
        quadratic_dict.extend(int(i));
        quadratic_dict.extend(b"N");
    }
    quadratic_dict.extend(b"u");
    quadratic_dict.extend(global("collections", "OrderedDict"));
    quadratic_dict.extend(b"q\x01");
    quadratic_dict.extend(b"h\x01h\x00\x85R0".repeat(100_000));
    quadratic_dict.extend(b".");
    // 100,000 nested lists
    let depth = 100_000;
    let deep = [vec![b']'; depth], vec![b'a'; depth - 1], vec![b'.']].concat();
    // each level a list holding the previous level twice: 2^40 leaves once expanded
    let mut bomb = b"]q\x00".to_vec();
    for level in 1..=40u8 {
        bomb.extend_from_slice(&[b'(', b'h', level - 1, b'h', level - 1, b'l', b'q', level]);
    }
    bomb.push(b'.');
    vec![
        Case::new(
            "import ffn: data.pkl of 30 million pushes (a 60 MB pickle deflated to 60 KB)",
            FFN,
            &[
                "archive/data.pkl: pickle byte",
                "memory budget of",
                "XINC_MAX_PICKLE_MIB",
            ],
            pickle_stream(b"\x80\x02", b"K\x01", 30 << 20, b"."),
        ),
        Case::new(
            "import ffn: data.pkl of 20 million push/pop pairs (constant memory), then STOP",
            FFN,
            &["archive/data.pkl: pickle byte 62914562: stack underflow"],
            pickle_stream(b"\x80\x02", b"K\x010", 20 << 20, b"."),
        ),
        Case::new(
            "import ffn: data.pkl memoizing one value 60 million times",
            FFN,
            &["archive/data.pkl", "memory budget of"],
            pickle_stream(b"\x80\x04N", b"\x94", 60 << 20, b"."),
        ),
        Case::new(
            "import ffn: data.pkl inflating beyond the 64 MiB pickle limit",
            FFN,
            &[
                "more than a checkpoint pickle (data.pkl) may hold",
                "XINC_MAX_PICKLE_MIB",
            ],
            pickle_stream(b"\x80\x02", b"N0", 35 << 20, b"}."),
        ),
        Case::new(
            "import ffn: list(l) of a 200,000-item list, 100,000 times",
            FFN,
            &["archive/data.pkl", "work limit", "quadratic"],
            pickle_only(quadratic_list),
        ),
        Case::new(
            "import ffn: OrderedDict(d) of a 100,000-entry dict, 100,000 times",
            FFN,
            &["archive/data.pkl", "work limit", "quadratic"],
            pickle_only(quadratic_dict),
        ),
        Case::new(
            "import ffn: 100,000 nested lists",
            FFN,
            &["archive/data.pkl", "nested deeper than 200 levels"],
            pickle_only(deep),
        ),
        Case::new(
            "import ffn: a reference bomb (2^40 leaves once expanded)",
            FFN,
            &["archive/data.pkl", "memory budget of"],
            pickle_only(bomb),
        ),
        Case::new(
            "import ffn: a string length beyond the input",
            FFN,
            &["length 2147483647 exceeds the 1 bytes left in the input"],
            pickle_only(b"\x80\x02X\xff\xff\xff\x7f.".to_vec()),
        ),
        Case::new(
            "import ffn: a pickle without STOP",
            FFN,
            &[
                "archive/data.pkl",
                "truncated: input ends before the STOP opcode",
            ],
            pickle_only(
                state_dict(&ffn_tensors(""))
                    .split_last()
                    .unwrap()
                    .1
                    .to_vec(),
            ),
        ),
        Case::new(
            "import ffn: os.system in the pickle stays inert data",
            FFN,
            &["missing tensor `net.0.linear.weight`"],
            |w| {
                let mut tensors = ffn_tensors("");
                tensors.remove(1);
                let mut pickle = state_dict(&tensors);
                pickle.pop(); // STOP: add one more item to the dict
                pickle.extend(unicode("net.0.linear.weight"));
                pickle.extend(global("os", "system"));
                pickle.extend(unicode(&format!("touch {}", w.join("pwned").display())));
                pickle.extend(b"\x85Rs.");
                let pickle = Data::Bytes(pickle);
                write_checkpoint(&w.join("w"), pickle, false, storages(&tensors));
            },
        ),
        Case::new(
            "import ffn: the pickle holds a list",
            FFN,
            &["the checkpoint holds list instead of a dict"],
            pickle_only(b"\x80\x02]K\x01a.".to_vec()),
        ),
    ]
}

/// Zip bombs, lying sizes, shared and short storages.
fn archives_and_storages() -> Vec<Case> {
    const GIB: usize = 1 << 30;
    // the last layer declared [3, 89478485] over a 1 GiB storage that deflates to 1 MB
    let bomb_layer = |w: &Path| {
        let mut tensors = ffn_tensors("");
        let cols = (GIB / 4) / 3;
        tensors[5] = T::new("net.2.linear.weight", "5", &[3, cols]).view(GIB / 4, 0);
        let mut entries = storages(&tensors);
        entries[5] = ("archive/data/5".into(), zeros(GIB), true);
        write_checkpoint(
            &w.join("w"),
            Data::Bytes(state_dict(&tensors)),
            false,
            entries,
        );
    };
    // an extra tensor over a 1 GiB storage that deflates to 1 MB
    let bomb_extra = |w: &Path| {
        let mut tensors = ffn_tensors("");
        tensors.push(T::new("bomb", "bomb", &[GIB / 4]));
        let mut entries = storages(&ffn_tensors(""));
        entries.push(("archive/data/bomb".into(), zeros(GIB), true));
        write_checkpoint(
            &w.join("w"),
            Data::Bytes(state_dict(&tensors)),
            false,
            entries,
        );
    };
    // 20,000 extra views of storage 0
    let mut views = ffn_tensors("");
    views.extend((0..20_000).map(|i| T::new(&format!("view.{i}"), "0", &[4, 2])));
    // a bias viewing the last 3 elements of a storage of 2^28 floats that declares 1 GiB but
    // holds 12 bytes
    let mut lying_storage = ffn_tensors("");
    lying_storage[6] = T::new("net.2.linear.bias", "6", &[3]).view(GIB / 4, GIB / 4 - 3);
    // net.0.linear.bias reads 32 bytes of a storage that holds 16
    let short_storage = |w: &Path| {
        let tensors = ffn_tensors("");
        let mut entries = storages(&tensors);
        entries[2].1 = Data::Bytes(values(4, 4));
        write_checkpoint(
            &w.join("w"),
            Data::Bytes(state_dict(&tensors)),
            false,
            entries,
        );
    };
    let mut out_of_range = ffn_tensors("");
    out_of_range[4] = T::new("net.1.linear.bias", "4", &[8]).view(8, 5);
    let mut missing_storage = ffn_tensors("");
    missing_storage[5].key = "99".into();
    let mut expanded = ffn_tensors("");
    expanded.push(T {
        stride: vec![0],
        ..T::new("expanded", "x", &[1 << 30]).view(1, 0)
    });
    let mut overflow = ffn_tensors("");
    overflow.push(T {
        shape: vec![1 << 40, 1 << 40],
        stride: vec![1 << 40, 1],
        ..T::new("huge", "h", &[1])
    });
    let mut complex = ffn_tensors("");
    complex[3] = complex[3].clone().storage("ComplexFloatStorage");
    vec![
        Case::new(
            "import ffn: a 1 GiB zip-bomb storage under a layer of the wrong shape",
            FFN,
            &["tensor `net.2.linear.weight` has shape [3, 89478485], expected [3, 8]"],
            bomb_layer,
        ),
        Case::new(
            "import ffn: a 1 GiB zip-bomb storage under an unexpected tensor",
            FFN,
            &["unexpected tensor(s) [\"bomb\"]"],
            bomb_extra,
        ),
        Case::new(
            "import ffn: 20,000 state-dict entries viewing one storage",
            FFN,
            &["unexpected tensor(s) [\"view.0\", \"view.1\""],
            checkpoint_of(views),
        ),
        Case::new(
            "import ffn: data.pkl declares fewer bytes than it holds",
            FFN,
            &["archive/data.pkl", "larger than its declared uncompressed size"],
            |w| {
                checkpoint_of(ffn_tensors(""))(w);
                patch_declared_size(&w.join("w"), "archive/data.pkl", 100);
            },
        ),
        Case::new(
            "import ffn: a storage declares 1 GiB and holds 12 bytes",
            FFN,
            &["archive/data/6: the entry ends after 12 of its 1073741824 bytes"],
            move |w| {
                let tensors = lying_storage.clone();
                let mut entries = storages(&ffn_tensors(""));
                entries[6].1 = Data::Bytes(values(3, 4));
                write_checkpoint(&w.join("w"), Data::Bytes(state_dict(&tensors)), false, entries);
                patch_declared_size(&w.join("w"), "archive/data/6", 1 << 30);
            },
        ),
        Case::new(
            "import ffn: a storage shorter than its tensor",
            FFN,
            &["tensor `net.0.linear.bias` needs 32 bytes of storage `archive/data/2`, which holds 16"],
            short_storage,
        ),
        Case::new(
            "import ffn: a view beyond the end of its storage",
            FFN,
            &["tensor `net.1.linear.bias`: it reaches element 13 of storage `archive/data/4`, which has 8 elements"],
            checkpoint_of(out_of_range),
        ),
        Case::new(
            "import ffn: a storage entry that is missing",
            FFN,
            &["tensor `net.2.linear.weight`: storage entry `archive/data/99` is missing"],
            move |w| {
                let pickle = Data::Bytes(state_dict(&missing_storage));
                write_checkpoint(&w.join("w"), pickle, false, storages(&ffn_tensors("")));
            },
        ),
        Case::new(
            "import ffn: a stride-0 view of 2^30 elements",
            FFN,
            &["tensor `expanded`", "refusing to expand beyond 16777216"],
            checkpoint_of(expanded),
        ),
        Case::new(
            "import ffn: a shape whose size overflows",
            FFN,
            &["tensor `huge`", "overflows"],
            checkpoint_of(overflow),
        ),
        Case::new(
            "import ffn: an unsupported storage type",
            FFN,
            &["tensor `net.1.linear.weight`: unsupported storage type ComplexFloatStorage"],
            checkpoint_of(complex),
        ),
        Case::new(
            "import ffn: an unknown byteorder",
            FFN,
            &["unknown byteorder \"middle\""],
            |w| {
                let tensors = ffn_tensors("");
                let mut entries = vec![
                    ("archive/data.pkl".to_string(), Data::Bytes(state_dict(&tensors)), false),
                    ("archive/byteorder".into(), Data::Bytes(b"middle".to_vec()), false),
                ];
                entries.extend(storages(&tensors));
                write_zip(&w.join("w"), &entries);
            },
        ),
    ]
}

/// Well-formed files whose content means something wrong.
fn meaning() -> Vec<Case> {
    let mut byte_storage = ffn_tensors("");
    byte_storage[1] = byte_storage[1].clone().storage("ByteStorage");
    let mut v3_mismatch = ffn_tensors("");
    v3_mismatch[1] = T {
        dtype: Some("float32"),
        ..v3_mismatch[1].clone().storage("ByteStorage")
    };
    let mut two_types = ffn_tensors("");
    two_types[4] = T::new("net.1.linear.bias", "3", &[8]).storage("ByteStorage");
    let mut ambiguous = ffn_tensors("model.");
    ambiguous.push(T::new("net.0.linear.weight", "1", &[8, 8]));
    let mut module_and_model = ffn_tensors("module.");
    module_and_model.push(T::new("model.net.2.linear.bias", "6", &[3]));
    let mut duplicate = ffn_tensors("");
    duplicate.push(T::new("net.1.linear.bias", "4", &[8]));
    let mut nerv_ambiguous = nerv_tensors();
    nerv_ambiguous.push(T::new("module.blocks.0.head_layer.bias", "7", &[3]));
    let mut nerv_wrong_shape = nerv_tensors();
    nerv_wrong_shape[6] = T::new("head_layer.weight", "6", &[3, 3, 3, 3]);
    let mut nerv_bytes = nerv_tensors();
    nerv_bytes[0] = nerv_bytes[0].clone().storage("ByteStorage");
    let mut wrong_shape = ffn_tensors("");
    wrong_shape[3] = T::new("net.1.linear.weight", "3", &[8, 9]);
    let nan = |w: &Path| {
        let tensors = ffn_tensors("");
        let mut entries = storages(&tensors);
        let mut bias = values(8, 4);
        bias[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        entries[4].1 = Data::Bytes(bias);
        write_checkpoint(
            &w.join("w"),
            Data::Bytes(state_dict(&tensors)),
            false,
            entries,
        );
    };
    vec![
        Case::new(
            "import ffn: a ByteStorage under a float weight",
            FFN,
            &["tensor `net.0.linear.weight` is stored as ByteStorage (u8), but the model needs floating-point weights"],
            checkpoint_of(byte_storage),
        ),
        Case::new(
            "import ffn: _rebuild_tensor_v3 float32 over a ByteStorage",
            FFN,
            &["tensor `net.0.linear.weight`: its dtype torch.float32 differs from its storage's (ByteStorage, torch.uint8)"],
            checkpoint_of(v3_mismatch),
        ),
        Case::new(
            "import ffn: one storage declared as FloatStorage and as ByteStorage",
            FFN,
            &["storage `3` is declared as FloatStorage of 64 elements by tensor `net.1.linear.weight` and as ByteStorage of 8 elements by tensor `net.1.linear.bias`"],
            checkpoint_of(two_types),
        ),
        Case::new(
            "import ffn: model.net.0.linear.weight and net.0.linear.weight",
            FFN,
            &["tensors `model.net.0.linear.weight` and `net.0.linear.weight` both mean `net.0.linear.weight`", "ambiguous"],
            checkpoint_of(ambiguous),
        ),
        Case::new(
            "import ffn: module.net.2.linear.bias and model.net.2.linear.bias",
            FFN,
            &["tensors `module.net.2.linear.bias` and `model.net.2.linear.bias` both mean `net.2.linear.bias`"],
            checkpoint_of(module_and_model),
        ),
        Case::new(
            "import ffn: one name twice in the pickle's dict",
            FFN,
            &["tensor `net.1.linear.bias` appears twice in the top-level dict"],
            checkpoint_of(duplicate),
        ),
        Case::new(
            "import ffn: a NaN weight",
            FFN,
            &["tensor `net.1.linear.bias` holds 1 non-finite value(s)"],
            nan,
        ),
        Case::new(
            "import ffn: a layer of the wrong shape",
            FFN,
            &["tensor `net.1.linear.weight` has shape [8, 9], expected [8, 8]"],
            checkpoint_of(wrong_shape),
        ),
        Case::new(
            "import nerv: blocks.0. makes two names one",
            NERV,
            &["tensors `head_layer.bias` and `module.blocks.0.head_layer.bias` both mean `head_layer.bias`", "blocks.0."],
            checkpoint_of(nerv_ambiguous),
        ),
        Case::new(
            "import nerv: a head of the wrong shape",
            NERV,
            &["tensor `head_layer.weight` has shape [3, 3, 3, 3], expected [3, 2, 3, 3]"],
            checkpoint_of(nerv_wrong_shape),
        ),
        Case::new(
            "import nerv: a ByteStorage under a float weight",
            NERV,
            &["tensor `decoder.0.conv.downconv.weight` is stored as ByteStorage (u8)"],
            checkpoint_of(nerv_bytes),
        ),
        Case::new(
            "import nerv: an FFN checkpoint",
            NERV,
            &["missing tensor `decoder.0.conv.downconv.weight`"],
            checkpoint_of(ffn_tensors("")),
        ),
    ]
}

fn safetensors_cases() -> Vec<Case> {
    let mut ambiguous = ffn_safetensors("");
    ambiguous.push((
        "module.positional_encoding.B".into(),
        vec![4, 2],
        vec![0.5; 8],
    ));
    let mut infinite = ffn_safetensors("model.");
    infinite[2].2[5] = f32::INFINITY;
    let one = |entry: &str| format!("{{{entry}}}");
    let huge_shape = one(
        r#""net.0.linear.weight":{"dtype":"F32","shape":[100000,100000],"data_offsets":[0,40000000000]}"#,
    );
    let overflow =
        one(r#""x":{"dtype":"F32","shape":[4611686018427387904,16],"data_offsets":[0,16]}"#);
    let disagree = one(r#""x":{"dtype":"F32","shape":[8],"data_offsets":[0,16]}"#);
    let dtype = one(r#""x":{"dtype":"F8_E5M2","shape":[8],"data_offsets":[0,8]}"#);
    let unknown_field = one(r#""x":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}"#);
    let duplicate = format!(
        "{{{e},{e}}}",
        e = r#""positional_encoding.B":{"dtype":"F32","shape":[4,2],"data_offsets":[0,32]}"#
    );
    let overlap = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#;
    let raw = |header: String, data_len: usize| {
        write(
            "w",
            safetensors_raw(&header, header.len() as u64, &vec![0; data_len]),
        )
    };
    vec![
        Case::new(
            "import ffn: safetensors with module.B and B",
            FFN,
            &["tensors `positional_encoding.B` and `module.positional_encoding.B` both mean `positional_encoding.B`"],
            write("w", safetensors(&ambiguous)),
        ),
        Case::new(
            "import ffn: safetensors with an infinite weight",
            FFN,
            &["tensor `net.0.linear.bias` holds 1 non-finite value(s)"],
            write("w", safetensors(&infinite)),
        ),
        Case::new(
            "import ffn: safetensors header length larger than the file",
            FFN,
            &["the header length 1000000 is larger than the 12 bytes that follow it"],
            write("w", safetensors_raw("{}          ", 1_000_000, &[])),
        ),
        Case::new(
            "import ffn: safetensors header length 2^64 - 1",
            FFN,
            &["the header length 18446744073709551615 is larger than the"],
            write("w", safetensors_raw("{\"a\":1}     ", u64::MAX, &[])),
        ),
        Case::new(
            "import ffn: safetensors declaring a [100000, 100000] tensor",
            FFN,
            &["tensor `net.0.linear.weight`: data_offsets [0, 40000000000] reach beyond the 64 bytes of data"],
            raw(huge_shape, 64),
        ),
        Case::new(
            "import ffn: safetensors shape whose size overflows",
            FFN,
            &["tensor `x`: shape [4611686018427387904, 16] of F32 overflows"],
            raw(overflow, 16),
        ),
        Case::new(
            "import ffn: safetensors shape and offsets disagree",
            FFN,
            &["tensor `x`: shape [8] of F32 takes 32 bytes, but data_offsets [0, 16] span 16"],
            raw(disagree, 16),
        ),
        Case::new(
            "import ffn: safetensors with an unsupported dtype",
            FFN,
            &["tensor `x`: unsupported dtype \"F8_E5M2\""],
            raw(dtype, 8),
        ),
        Case::new(
            "import ffn: safetensors entry with an unknown field",
            FFN,
            &["malformed header: unknown field `extra`"],
            raw(unknown_field, 8),
        ),
        Case::new(
            "import ffn: safetensors with one name twice",
            FFN,
            &["tensor `positional_encoding.B` appears twice in the header"],
            raw(duplicate, 32),
        ),
        Case::new(
            "import ffn: safetensors tensors that overlap",
            FFN,
            &["tensors `a` and `b` overlap in the data"],
            raw(overlap.to_string(), 24),
        ),
    ]
}
