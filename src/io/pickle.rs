//! A restricted pickle virtual machine that reads the `data.pkl` of PyTorch checkpoints without
//! ever executing pickle code.
//!
//! A real unpickler *runs* its input: `GLOBAL` imports any module attribute and `REDUCE` calls it,
//! which is how a malicious checkpoint executes `os.system`. This VM imports and calls nothing.
//! It decodes the opcode stream (protocols 0–5) into a [`Value`] tree:
//!
//! - plain data (numbers, strings, bytes, lists, tuples, dicts, sets) becomes the matching variant;
//! - the few globals that checkpoints need are *interpreted* symbolically: torch's tensor rebuild
//!   functions become [`Value::Tensor`], `nn.Parameter` unwraps to its tensor, `OrderedDict`,
//!   `dict` and `defaultdict` become [`Value::Dict`], `list`/`set`/`frozenset`/`tuple` become lists
//!   and tuples;
//! - every other global (an OmegaConf `DictConfig`, `os.system`, …) becomes an inert
//!   [`Value::Object`] that only records its class name and arguments.
//!
//! Pickles have reference semantics: the memo lets one container be shared and even contain
//! itself (OmegaConf's `_parent` pointers). The VM therefore builds a graph of nodes first and
//! expands it into a tree at the end; a reference back to an enclosing container becomes
//! [`Value::Cycle`].
//!
//! Hostile input can neither run code nor exhaust memory or time:
//! - **Memory budget.** Every byte the machine holds (graph nodes and their strings and
//!   containers, the stack, marks, memo, and the expanded tree) is charged to a budget *before*
//!   it is allocated ([`budget_for`]: proportional to the input, with a floor and a cap); the
//!   machine frees what it pops (nodes are reference-counted, freed iteratively), so a long stream
//!   of trivial opcodes runs in constant memory. [`parse_with_budget`] reports the accounted peak.
//! - **Time.** Each opcode does work proportional to the input it consumes, except copies of an
//!   existing container (`dict(d)`, `list(l)`), whose elements are counted against a work limit
//!   (as many elements as the budget could hold): repeated copies cannot make parsing quadratic.
//! - Every length is checked against the input before it is read, the stack, marks and memo are
//!   capped relative to the input length, nesting is limited, arithmetic is checked. Every failure
//!   is a [`PickleError`] naming the opcode offset; nothing panics.

use std::collections::BTreeMap;
use std::mem::size_of;

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Python `None`.
    None,
    /// Python `bool`.
    Bool(bool),
    /// Python `int` that fits in 64 bits.
    Int(i64),
    /// Python `float`.
    Float(f64),
    /// Python `str` (and protocol-0/1 byte strings that are valid UTF-8).
    Str(String),
    /// Python `bytes` / `bytearray`.
    Bytes(Vec<u8>),
    /// Python `list`, `set` or `frozenset`.
    List(Vec<Value>),
    /// Python `tuple`.
    Tuple(Vec<Value>),
    /// Python `dict` / `OrderedDict` / `defaultdict`, entries in insertion order. Duplicate keys
    /// (impossible in Python, possible in a forged pickle) are all kept.
    Dict(Vec<(Value, Value)>),
    /// A symbolic reference to `module.name`; it is never imported.
    Global { module: String, name: String },
    /// A persistent id that is not a torch storage reference.
    PersistentId(Box<Value>),
    /// An opaque object made by `REDUCE`/`NEWOBJ` of a global that is not interpreted. Nothing was
    /// called: it is kept only as data (`BUILD` state included; items that the pickle adds to it
    /// with `SETITEM(S)`/`APPEND(S)` are dropped). Consumers skip it.
    Object {
        class: (String, String),
        args: Box<Value>,
        state: Option<Box<Value>>,
    },
    /// A tensor rebuilt by `torch._utils._rebuild_tensor_v2` (or `_rebuild_tensor`,
    /// `_rebuild_tensor_v3`).
    Tensor(Box<TensorRef>),
    /// A reference back to a container that encloses it: the pickle graph has a cycle here.
    Cycle,
}

/// Where a tensor's data lives in the checkpoint and how to view it. Sizes are in elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// Storage key: the data is the zip entry `<prefix>/data/<storage_key>`.
    pub storage_key: String,
    /// Torch storage class name, e.g. `FloatStorage`, `BFloat16Storage`, `LongStorage`.
    pub storage_type: String,
    /// Device the tensor was saved from, e.g. `cpu` or `cuda:0` (informational).
    pub location: String,
    /// Number of elements of the storage, as the pickle states it.
    pub storage_numel: usize,
    /// Index of the tensor's first element in the storage.
    pub storage_offset: usize,
    /// Tensor shape (empty for a 0-d tensor).
    pub shape: Vec<usize>,
    /// Stride of each dimension, in elements.
    pub stride: Vec<usize>,
    /// The tensor dtype that a `_rebuild_tensor_v3` call states beside the storage (the name of a
    /// `torch` attribute, e.g. `float32`); `None` for the older calls, whose tensors take their
    /// storage's dtype.
    pub dtype: Option<String>,
}

/// A malformed, truncated or unsupported pickle, or one beyond its budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pickle byte {offset}: {reason}")]
pub struct PickleError {
    /// Offset of the opcode that failed.
    pub offset: usize,
    /// What was wrong.
    pub reason: String,
    /// Whether the input is malformed or exceeded the memory budget or work limit.
    pub kind: PickleErrorKind,
}

/// The class of a [`PickleError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickleErrorKind {
    /// Malformed, truncated or unsupported input.
    Malformed,
    /// The input needs more memory than its budget, or more container copying than its work
    /// limit.
    OverBudget,
}

/// Fixed part of the memory budget of one parse: covers every pickle up to about 1 MB whatever
/// its shape (official `data.pkl` files are KB to a few MB).
pub(crate) const BUDGET_BASE: usize = 64 << 20;
/// Budget per input byte: real checkpoint pickles peak at about 40 bytes per input byte (the
/// golden Lightning checkpoint's 25 KB `data.pkl`: graph nodes, memo and the expanded tree).
pub const BUDGET_PER_BYTE: usize = 64;
/// Cap of the budget of [`parse`] (callers of [`parse_with_budget`] choose their own).
pub const DEFAULT_BUDGET_CAP: usize = 512 << 20;

/// The memory budget of a pickle of `len` bytes: [`BUDGET_BASE`] + [`BUDGET_PER_BYTE`] × `len`,
/// at most `cap`.
pub fn budget_for(len: usize, cap: usize) -> usize {
    BUDGET_PER_BYTE
        .saturating_mul(len)
        .saturating_add(BUDGET_BASE)
        .min(cap)
}

/// Decodes one pickle (up to its `STOP` opcode) without executing anything, within the budget
/// [`budget_for`]`(data.len(), `[`DEFAULT_BUDGET_CAP`]`)`.
pub fn parse(data: &[u8]) -> Result<Value, PickleError> {
    parse_with_budget(data, budget_for(data.len(), DEFAULT_BUDGET_CAP)).0
}

/// Decodes one pickle holding at most `budget` bytes at any time; also returns the accounted
/// peak (never above `budget`), whether the parse succeeded or not.
pub fn parse_with_budget(data: &[u8], budget: usize) -> (Result<Value, PickleError>, usize) {
    let mut machine = Machine::new(data, budget);
    let result = machine.run().and_then(|root| machine.expand(root));
    (result, machine.meter.peak)
}

/// [`parse_with_budget`] that also audits the accounting (for tests): after every opcode the
/// bytes counted must equal the bytes the machine's structures hold (vector capacities, node
/// payloads, memo entries), and after a successful parse the graph plus the returned tree.
/// Panics on a mismatch.
#[doc(hidden)]
pub fn parse_audited(data: &[u8], budget: usize) -> (Result<Value, PickleError>, usize) {
    let mut machine = Machine::new(data, budget);
    machine.audit = true;
    let result = machine.run().and_then(|root| {
        let graph = machine.held_bytes();
        let value = machine.expand(root)?;
        let tree = graph + machine.slots.len() + value_heap_bytes(&value);
        assert_eq!(machine.meter.held, tree, "tree accounting");
        Ok(value)
    });
    (result, machine.meter.peak)
}

impl Value {
    /// The value stored under the string key `key`, if `self` is a dict (the last one wins).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The entries, if `self` is a dict.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// The string, if `self` is a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if `self` is an `Int`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A short name of the variant, for messages ("dict", "tensor", "object os.system", …).
    pub fn kind(&self) -> String {
        match self {
            Value::Object { class, .. } => format!("object {}.{}", class.0, class.1),
            Value::Global { module, name } => format!("global {module}.{name}"),
            other => other.simple_kind().to_string(),
        }
    }

    fn simple_kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::PersistentId(_) => "persistent id",
            Value::Tensor(_) => "tensor",
            Value::Cycle => "cyclic reference",
            Value::Global { .. } | Value::Object { .. } => "object",
        }
    }
}

/// Deepest nesting of containers that [`parse`] accepts.
const MAX_DEPTH: usize = 200;
/// Highest pickle protocol understood.
const MAX_PROTOCOL: u8 = 5;
/// Module names of Python's builtins (Python 2 pickles and protocol <= 2 use `__builtin__`).
const BUILTINS: [&str; 2] = ["builtins", "__builtin__"];
/// Bytes charged per memo entry: an upper bound of a B-tree map's cost per `(u64, NodeId)` entry
/// (nodes of 11 entries, at least half full, plus the internal levels).
const MEMO_ENTRY_BYTES: usize = 48;
/// Longest excerpt of an operand quoted in an error message.
const MAX_QUOTE: usize = 60;

/// Opcodes, named as in CPython's `pickle.py`.
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const STRING: u8 = b'S';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT2: u8 = 0x83;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const BYTEARRAY8: u8 = 0x96;
}

type NodeId = usize;
type Res<T> = Result<T, PickleError>;

/// A value of the pickle graph; containers refer to other nodes by id, so they can be shared.
#[derive(Debug)]
enum Node {
    /// A value without children (scalars, strings, globals).
    Leaf(Value),
    List(Vec<NodeId>),
    Tuple(Vec<NodeId>),
    Dict(Vec<(NodeId, NodeId)>),
    PersistentId(NodeId),
    Object {
        class: (String, String),
        args: NodeId,
        state: Option<NodeId>,
    },
    Tensor(Box<TensorRef>),
}

impl Node {
    /// Heap bytes the node owns (charged when it is made or grown, refunded when it is freed).
    fn heap_bytes(&self) -> usize {
        match self {
            Node::Leaf(value) => match value {
                Value::Str(s) => s.capacity(),
                Value::Bytes(b) => b.capacity(),
                Value::Global { module, name } => module.capacity() + name.capacity(),
                _ => 0,
            },
            Node::List(items) | Node::Tuple(items) => items.capacity() * size_of::<NodeId>(),
            Node::Dict(entries) => entries.capacity() * size_of::<(NodeId, NodeId)>(),
            Node::Object { class, .. } => class.0.capacity() + class.1.capacity(),
            Node::Tensor(t) => size_of::<TensorRef>() + tensor_heap_bytes(t),
            Node::PersistentId(_) => 0,
        }
    }

    /// The nodes this one refers to (each reference holds one count).
    fn children(&self) -> impl Iterator<Item = NodeId> + '_ {
        let (items, pairs, single): (&[NodeId], &[(NodeId, NodeId)], [Option<NodeId>; 2]) =
            match self {
                Node::List(items) | Node::Tuple(items) => (items, &[], [None, None]),
                Node::Dict(entries) => (&[], entries, [None, None]),
                Node::PersistentId(id) => (&[], &[], [Some(*id), None]),
                Node::Object { args, state, .. } => (&[], &[], [Some(*args), *state]),
                Node::Leaf(_) | Node::Tensor(_) => (&[], &[], [None, None]),
            };
        items
            .iter()
            .copied()
            .chain(pairs.iter().flat_map(|&(k, v)| [k, v]))
            .chain(single.into_iter().flatten())
    }
}

/// Heap bytes of a tensor reference's strings and vectors.
fn tensor_heap_bytes(t: &TensorRef) -> usize {
    t.storage_key.capacity()
        + t.storage_type.capacity()
        + t.location.capacity()
        + t.dtype.as_ref().map_or(0, String::capacity)
        + (t.shape.capacity() + t.stride.capacity()) * size_of::<usize>()
}

/// A node and the number of references to it (from the stack, the memo and other nodes).
#[derive(Debug)]
struct Slot {
    node: Node,
    refs: usize,
}

/// Returned by [`Machine::node`] for an id that does not exist (never happens for ids the
/// machine made itself; it keeps lookups total instead of panicking).
static MISSING: Node = Node::Leaf(Value::None);

/// The bytes a parse holds, against its budget.
#[derive(Debug, Clone, Copy)]
struct Meter {
    held: usize,
    peak: usize,
    limit: usize,
}

impl Meter {
    /// Counts `bytes` more, or refuses when that would exceed the limit (nothing is counted then).
    fn charge(&mut self, bytes: usize) -> Res<()> {
        let held = self.held.saturating_add(bytes);
        if held > self.limit {
            return Err(PickleError {
                offset: 0,
                reason: format!(
                    "the decoded pickle needs more than its memory budget of {} bytes \
                     (a pickle bomb, or far more objects than a state dict holds?)",
                    self.limit
                ),
                kind: PickleErrorKind::OverBudget,
            });
        }
        self.held = held;
        self.peak = self.peak.max(held);
        Ok(())
    }

    /// Refuses unless `bytes` more would fit (for a temporary that is charged once it is stored).
    fn fits(&self, bytes: usize) -> Res<()> {
        let mut probe = *self;
        probe.charge(bytes)
    }

    fn refund(&mut self, bytes: usize) {
        self.held = self.held.saturating_sub(bytes);
    }
}

/// Makes room in `vec` for `extra` more items, charging the new capacity to `meter` before it is
/// allocated (capacity doubles, so pushes stay amortised O(1)).
fn reserve<T>(vec: &mut Vec<T>, extra: usize, meter: &mut Meter) -> Res<()> {
    let needed = vec.len().saturating_add(extra);
    let capacity = vec.capacity();
    if needed <= capacity {
        return Ok(());
    }
    let target = needed.max(capacity.saturating_mul(2)).max(4);
    meter.charge((target - capacity).saturating_mul(size_of::<T>()))?;
    vec.reserve_exact(target - vec.len());
    Ok(())
}

/// Reads the input front to back; `None` means the input ended early.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// The bytes up to the next `\n`, which is consumed but not returned.
    fn line(&mut self) -> Option<&'a [u8]> {
        let rest = self.data.get(self.pos..)?;
        let len = rest.iter().position(|&b| b == b'\n')?;
        let line = rest.get(..len)?;
        self.pos = self.pos.checked_add(len)?.checked_add(1)?;
        Some(line)
    }
}

/// The pickle virtual machine: a stack of node handles, a mark stack and a memo over an arena of
/// reference-counted nodes.
///
/// A *handle* is one counted reference to a node: [`Machine::new_node`] returns one,
/// [`Machine::pop`] hands the stack's over to the caller, who stores it (on the stack, in the memo
/// or in a container) or gives it back with [`Machine::release`]. A node whose count falls to zero
/// is freed with everything only it referred to; its slot is reused.
struct Machine<'a> {
    input: Cursor<'a>,
    /// Offset of the opcode being executed, for errors.
    op_offset: usize,
    slots: Vec<Slot>,
    /// Freed slots, for reuse. Its capacity is kept at least that of `slots`, so that freeing
    /// never allocates.
    free: Vec<NodeId>,
    /// Nodes whose count fell to zero, not yet freed (capacity as `free`).
    dead: Vec<NodeId>,
    stack: Vec<NodeId>,
    /// Stack lengths at each open `MARK`.
    marks: Vec<usize>,
    memo: BTreeMap<u64, NodeId>,
    /// Cap on the stack (and mark stack) and on the memo size.
    max_entries: usize,
    meter: Meter,
    /// Container elements that may still be copied (`dict(d)`, `list(l)`).
    copies_left: usize,
    /// Whether to check the accounting after every opcode ([`parse_audited`]).
    audit: bool,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8], budget: usize) -> Self {
        Machine {
            input: Cursor { data, pos: 0 },
            op_offset: 0,
            slots: Vec::new(),
            free: Vec::new(),
            dead: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: BTreeMap::new(),
            max_entries: data.len().saturating_add(16),
            meter: Meter {
                held: 0,
                peak: 0,
                limit: budget,
            },
            copies_left: budget / size_of::<NodeId>(),
            audit: false,
        }
    }

    fn err(&self, reason: impl Into<String>) -> PickleError {
        PickleError {
            offset: self.op_offset,
            reason: reason.into(),
            kind: PickleErrorKind::Malformed,
        }
    }

    /// Runs opcodes up to `STOP` and returns the handle left on the stack.
    fn run(&mut self) -> Res<NodeId> {
        loop {
            self.op_offset = self.input.pos;
            let [code] = self
                .input
                .array::<1>()
                .ok_or_else(|| self.err("truncated: input ends before the STOP opcode"))?;
            if code == op::STOP {
                return self.pop();
            }
            let offset = self.op_offset;
            self.step(code).map_err(|e| PickleError { offset, ..e })?;
            if self.audit {
                assert_eq!(
                    self.meter.held,
                    self.held_bytes(),
                    "opcode at byte {offset}"
                );
            }
        }
    }

    /// The bytes the machine's structures hold, computed from them (what the meter must count).
    fn held_bytes(&self) -> usize {
        let nodes: usize = self.slots.iter().map(|s| s.node.heap_bytes()).sum();
        nodes
            + self.slots.capacity() * size_of::<Slot>()
            + (self.free.capacity() + self.dead.capacity() + self.stack.capacity())
                * size_of::<NodeId>()
            + self.marks.capacity() * size_of::<usize>()
            + self.memo.len() * MEMO_ENTRY_BYTES
    }

    fn step(&mut self, code: u8) -> Res<()> {
        match code {
            op::PROTO => self.proto(),
            op::FRAME => self.fixed::<8>().map(drop),
            op::MARK => self.mark(),
            op::POP => self.pop_any(),
            op::POP_MARK => self.discard_mark(),
            op::DUP => self.dup(),
            op::NONE => self.push_leaf(Value::None),
            op::NEWTRUE => self.push_leaf(Value::Bool(true)),
            op::NEWFALSE => self.push_leaf(Value::Bool(false)),
            op::INT => self.text_int(),
            op::BININT => self
                .fixed()
                .and_then(|b| self.push_int(i32::from_le_bytes(b).into())),
            op::BININT1 => self
                .fixed()
                .and_then(|b| self.push_int(u8::from_le_bytes(b).into())),
            op::BININT2 => self
                .fixed()
                .and_then(|b| self.push_int(u16::from_le_bytes(b).into())),
            op::LONG => self.text_long(),
            op::LONG1 => self.sized(1).and_then(|b| self.long(b)),
            op::LONG4 => self.sized(4).and_then(|b| self.long(b)),
            op::FLOAT => self.text_float(),
            op::BINFLOAT => self
                .fixed()
                .and_then(|b| self.push_leaf(Value::Float(f64::from_be_bytes(b)))),
            op::STRING => self.text_string(),
            op::BINSTRING => self.sized(4).and_then(|b| self.push_leaf(byte_string(b))),
            op::SHORT_BINSTRING => self.sized(1).and_then(|b| self.push_leaf(byte_string(b))),
            op::UNICODE => self.text_unicode(),
            op::BINUNICODE => self.sized(4).and_then(|b| self.push_leaf(utf8(b))),
            op::SHORT_BINUNICODE => self.sized(1).and_then(|b| self.push_leaf(utf8(b))),
            op::BINUNICODE8 => self.sized(8).and_then(|b| self.push_leaf(utf8(b))),
            op::BINBYTES => self.sized(4).and_then(|b| self.push_bytes(b)),
            op::SHORT_BINBYTES => self.sized(1).and_then(|b| self.push_bytes(b)),
            op::BINBYTES8 | op::BYTEARRAY8 => self.sized(8).and_then(|b| self.push_bytes(b)),
            op::EMPTY_LIST | op::EMPTY_SET => self.push_node(Node::List(Vec::new())),
            op::EMPTY_TUPLE => self.push_node(Node::Tuple(Vec::new())),
            op::EMPTY_DICT => self.push_node(Node::Dict(Vec::new())),
            op::LIST | op::FROZENSET => self.pop_mark().and_then(|v| self.push_node(Node::List(v))),
            op::TUPLE => self.pop_mark().and_then(|v| self.push_node(Node::Tuple(v))),
            op::TUPLE1 => self.small_tuple(1),
            op::TUPLE2 => self.small_tuple(2),
            op::TUPLE3 => self.small_tuple(3),
            op::DICT => self.dict(),
            op::APPEND => self.pop().and_then(|v| self.extend_list(vec![v])),
            op::APPENDS | op::ADDITEMS => self.pop_mark().and_then(|v| self.extend_list(v)),
            op::SETITEM => self.setitem(),
            op::SETITEMS => self.setitems(),
            op::GLOBAL => self.text_global(),
            op::STACK_GLOBAL => self.stack_global(),
            op::REDUCE | op::NEWOBJ => self.reduce(),
            op::NEWOBJ_EX => self.pop().and_then(|kwargs| {
                self.release(kwargs);
                self.reduce()
            }),
            op::BUILD => self.build(),
            op::PUT => self.text_index().and_then(|i| self.memo_put(i)),
            op::BINPUT => self
                .fixed()
                .and_then(|b| self.memo_put(u8::from_le_bytes(b).into())),
            op::LONG_BINPUT => self
                .fixed()
                .and_then(|b| self.memo_put(u32::from_le_bytes(b).into())),
            op::MEMOIZE => self.memo_put(self.memo.len() as u64),
            op::GET => self.text_index().and_then(|i| self.memo_get(i)),
            op::BINGET => self
                .fixed()
                .and_then(|b| self.memo_get(u8::from_le_bytes(b).into())),
            op::LONG_BINGET => self
                .fixed()
                .and_then(|b| self.memo_get(u32::from_le_bytes(b).into())),
            op::PERSID => self.text_persid(),
            op::BINPERSID => self
                .pop()
                .and_then(|id| self.push_node(Node::PersistentId(id))),
            op::EXT1 | op::EXT2 | op::EXT4 => {
                Err(self.err("extension-registry opcodes (EXT1/EXT2/EXT4) are not supported"))
            }
            other => Err(self.err(format!("unknown or unsupported opcode 0x{other:02x}"))),
        }
    }

    // ------------------------------------------------------------------ reading operands

    fn fixed<const N: usize>(&mut self) -> Res<[u8; N]> {
        self.input
            .array::<N>()
            .ok_or_else(|| self.err(format!("truncated: {N}-byte operand missing")))
    }

    /// A length-prefixed operand: `width` little-endian length bytes, then that many bytes.
    fn sized(&mut self, width: usize) -> Res<&'a [u8]> {
        let prefix = self
            .input
            .take(width)
            .ok_or_else(|| self.err("truncated: length prefix missing"))?;
        let mut raw = [0u8; 8];
        raw.iter_mut()
            .zip(prefix)
            .for_each(|(dst, src)| *dst = *src);
        let negative = width == 4 && prefix.last().is_some_and(|b| b & 0x80 != 0);
        let len = usize::try_from(u64::from_le_bytes(raw))
            .ok()
            .filter(|_| !negative)
            .ok_or_else(|| self.err("invalid length prefix"))?;
        let remaining = self.input.data.len().saturating_sub(self.input.pos);
        self.input.take(len).ok_or_else(|| {
            self.err(format!(
                "length {len} exceeds the {remaining} bytes left in the input"
            ))
        })
    }

    fn text_line(&mut self) -> Res<&'a [u8]> {
        self.input
            .line()
            .ok_or_else(|| self.err("truncated: newline-terminated operand missing"))
    }

    /// A text operand parsed with `FromStr`.
    fn text_parse<T: std::str::FromStr>(&mut self, what: &str) -> Res<T> {
        let line = self.text_line()?;
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| self.err(format!("invalid {what} {}", quote(line))))
    }

    fn text_index(&mut self) -> Res<u64> {
        self.text_parse("memo index")
    }

    // ------------------------------------------------------------------ nodes and handles

    fn node(&self, id: NodeId) -> &Node {
        self.slots.get(id).map_or(&MISSING, |slot| &slot.node)
    }

    /// Stores `node` (its payload charged to the budget) and returns a handle to it.
    fn new_node(&mut self, node: Node) -> Res<NodeId> {
        self.meter.charge(node.heap_bytes())?;
        let slot = Slot { node, refs: 1 };
        if let Some(id) = self.free.pop() {
            if let Some(reused) = self.slots.get_mut(id) {
                *reused = slot;
                return Ok(id);
            }
        }
        if self.slots.len() == self.slots.capacity() {
            reserve(&mut self.slots, 1, &mut self.meter)?;
            let capacity = self.slots.capacity();
            let (free, dead) = (self.free.len(), self.dead.len());
            reserve(&mut self.free, capacity - free, &mut self.meter)?;
            reserve(&mut self.dead, capacity - dead, &mut self.meter)?;
        }
        self.slots.push(slot);
        Ok(self.slots.len() - 1)
    }

    /// A second handle to `id`.
    fn retain(&mut self, id: NodeId) -> NodeId {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.refs = slot.refs.saturating_add(1);
        }
        id
    }

    /// Gives a handle back; frees the node, and what only it referred to, when none is left.
    /// Iterative, so that freeing a deeply nested container cannot overflow the call stack.
    fn release(&mut self, id: NodeId) {
        self.drop_ref(id);
        while let Some(id) = self.dead.pop() {
            let Some(slot) = self.slots.get_mut(id) else {
                continue;
            };
            let node = std::mem::replace(&mut slot.node, Node::Leaf(Value::None));
            self.meter.refund(node.heap_bytes());
            self.free.push(id);
            for child in node.children() {
                self.drop_ref(child);
            }
        }
    }

    fn drop_ref(&mut self, id: NodeId) {
        if let Some(slot) = self.slots.get_mut(id) {
            if slot.refs > 0 {
                slot.refs -= 1;
                if slot.refs == 0 {
                    self.dead.push(id);
                }
            }
        }
    }

    fn release_all(&mut self, ids: impl IntoIterator<Item = NodeId>) {
        ids.into_iter().for_each(|id| self.release(id));
    }

    /// Counts `n` container elements about to be copied against the work limit.
    fn count_copies(&mut self, n: usize) -> Res<()> {
        self.copies_left = self.copies_left.checked_sub(n).ok_or_else(|| PickleError {
            offset: self.op_offset,
            reason: "containers are copied beyond the work limit (repeated copies of a large \
                     container: quadratic growth)"
                .into(),
            kind: PickleErrorKind::OverBudget,
        })?;
        Ok(())
    }

    // ------------------------------------------------------------------ stack and memo

    /// Pushes a handle (the stack now holds it).
    fn push(&mut self, id: NodeId) -> Res<()> {
        if self.stack.len() >= self.max_entries {
            return Err(self.err("stack limit exceeded"));
        }
        reserve(&mut self.stack, 1, &mut self.meter)?;
        self.stack.push(id);
        Ok(())
    }

    fn push_node(&mut self, node: Node) -> Res<()> {
        let id = self.new_node(node)?;
        self.push(id)
    }

    fn push_leaf(&mut self, value: Value) -> Res<()> {
        self.push_node(Node::Leaf(value))
    }

    fn push_int(&mut self, value: i64) -> Res<()> {
        self.push_leaf(Value::Int(value))
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Res<()> {
        self.push_leaf(Value::Bytes(bytes.to_vec()))
    }

    /// Lowest stack index that belongs to the innermost open mark.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    /// The top of the stack, borrowed (no handle).
    fn top(&self) -> Res<NodeId> {
        match self.stack.last() {
            Some(&id) if self.stack.len() > self.floor() => Ok(id),
            _ => Err(self.err("stack underflow")),
        }
    }

    /// Removes the top of the stack and hands its handle over.
    fn pop(&mut self) -> Res<NodeId> {
        let id = self.top()?;
        self.stack.pop();
        Ok(id)
    }

    fn dup(&mut self) -> Res<()> {
        let id = self.top()?;
        let id = self.retain(id);
        self.push(id)
    }

    fn mark(&mut self) -> Res<()> {
        if self.marks.len() >= self.max_entries {
            return Err(self.err("mark limit exceeded"));
        }
        reserve(&mut self.marks, 1, &mut self.meter)?;
        self.marks.push(self.stack.len());
        Ok(())
    }

    /// `POP`: removes the top item, or the innermost mark when nothing lies above it.
    fn pop_any(&mut self) -> Res<()> {
        if self.stack.len() > self.floor() {
            let id = self.pop()?;
            self.release(id);
            return Ok(());
        }
        self.marks
            .pop()
            .map(drop)
            .ok_or_else(|| self.err("stack underflow"))
    }

    /// Removes and returns (the handles of) everything above the innermost mark, and the mark.
    fn pop_mark(&mut self) -> Res<Vec<NodeId>> {
        let start = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK on the stack"))?;
        let len = self
            .stack
            .len()
            .checked_sub(start)
            .ok_or_else(|| self.err("corrupt mark"))?;
        self.meter.fits(len.saturating_mul(size_of::<NodeId>()))?;
        Ok(self.stack.split_off(start))
    }

    /// `POP_MARK`: drops everything above the innermost mark.
    fn discard_mark(&mut self) -> Res<()> {
        let items = self.pop_mark()?;
        self.release_all(items);
        Ok(())
    }

    fn memo_put(&mut self, index: u64) -> Res<()> {
        let id = self.top()?;
        if !self.memo.contains_key(&index) {
            if self.memo.len() >= self.max_entries {
                return Err(self.err("memo limit exceeded"));
            }
            self.meter.charge(MEMO_ENTRY_BYTES)?;
        }
        let id = self.retain(id);
        if let Some(old) = self.memo.insert(index, id) {
            self.release(old);
        }
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> Res<()> {
        let id = *self
            .memo
            .get(&index)
            .ok_or_else(|| self.err(format!("memo entry {index} does not exist")))?;
        let id = self.retain(id);
        self.push(id)
    }

    // ------------------------------------------------------------------ scalar opcodes

    fn proto(&mut self) -> Res<()> {
        let [version] = self.fixed()?;
        if version > MAX_PROTOCOL {
            return Err(self.err(format!("unsupported pickle protocol {version}")));
        }
        Ok(())
    }

    fn text_int(&mut self) -> Res<()> {
        let line = self.text_line()?;
        match line {
            b"00" => self.push_leaf(Value::Bool(false)),
            b"01" => self.push_leaf(Value::Bool(true)),
            _ => {
                let value = parse_decimal(line, false).ok_or_else(|| self.bad_int(line))?;
                self.push_int(value)
            }
        }
    }

    fn text_long(&mut self) -> Res<()> {
        let line = self.text_line()?;
        let value = parse_decimal(line, true).ok_or_else(|| self.bad_int(line))?;
        self.push_int(value)
    }

    fn bad_int(&self, line: &[u8]) -> PickleError {
        self.err(format!(
            "invalid or out-of-range (beyond 64 bits) integer {}",
            quote(line)
        ))
    }

    fn long(&mut self, bytes: &[u8]) -> Res<()> {
        let value = decode_long(bytes)
            .ok_or_else(|| self.err("integer does not fit in 64 bits (LONG1/LONG4)"))?;
        self.push_int(value)
    }

    fn text_float(&mut self) -> Res<()> {
        let value = self.text_parse("float")?;
        self.push_leaf(Value::Float(value))
    }

    fn text_string(&mut self) -> Res<()> {
        let line = self.text_line()?;
        let bytes = unquote(line)
            .and_then(unescape_bytes)
            .ok_or_else(|| self.err(format!("invalid STRING literal {}", quote(line))))?;
        self.push_leaf(byte_string(&bytes))
    }

    fn text_unicode(&mut self) -> Res<()> {
        let line = self.text_line()?;
        let text = raw_unicode_unescape(line)
            .ok_or_else(|| self.err(format!("invalid UNICODE literal {}", quote(line))))?;
        self.push_leaf(Value::Str(text))
    }

    fn text_persid(&mut self) -> Res<()> {
        let line = self.text_line()?;
        let id = self.new_node(Node::Leaf(utf8(line)))?;
        self.push_node(Node::PersistentId(id))
    }

    // ------------------------------------------------------------------ containers

    fn small_tuple(&mut self, len: usize) -> Res<()> {
        let mut items = (0..len).map(|_| self.pop()).collect::<Res<Vec<_>>>()?;
        items.reverse();
        self.push_node(Node::Tuple(items))
    }

    fn dict(&mut self) -> Res<()> {
        let items = self.pop_mark()?;
        let pairs = self.pairs(items)?;
        self.push_node(Node::Dict(pairs))
    }

    fn pairs(&self, items: Vec<NodeId>) -> Res<Vec<(NodeId, NodeId)>> {
        if items.len() % 2 != 0 {
            return Err(self.err("odd number of items for a dict"));
        }
        Ok(items
            .chunks_exact(2)
            .filter_map(|kv| match kv {
                &[key, value] => Some((key, value)),
                _ => None,
            })
            .collect())
    }

    fn setitem(&mut self) -> Res<()> {
        let value = self.pop()?;
        let key = self.pop()?;
        self.extend_dict(vec![(key, value)])
    }

    fn setitems(&mut self) -> Res<()> {
        let items = self.pop_mark()?;
        let pairs = self.pairs(items)?;
        self.extend_dict(pairs)
    }

    /// `APPEND(S)`/`ADDITEMS`: moves the handles `items` into the list on top of the stack (an
    /// object's items are dropped).
    fn extend_list(&mut self, items: Vec<NodeId>) -> Res<()> {
        let target = self.top()?;
        match self.slots.get_mut(target).map(|slot| &mut slot.node) {
            Some(Node::List(list)) => {
                reserve(list, items.len(), &mut self.meter)?;
                list.extend(items);
                Ok(())
            }
            Some(Node::Object { .. }) => {
                self.release_all(items);
                Ok(())
            }
            _ => Err(self.err("APPEND(S)/ADDITEMS target is not a list or set")),
        }
    }

    /// `SETITEM(S)`: moves the handles `pairs` into the dict on top of the stack (an object's
    /// items are dropped).
    fn extend_dict(&mut self, pairs: Vec<(NodeId, NodeId)>) -> Res<()> {
        let target = self.top()?;
        match self.slots.get_mut(target).map(|slot| &mut slot.node) {
            Some(Node::Dict(dict)) => {
                reserve(dict, pairs.len(), &mut self.meter)?;
                dict.extend(pairs);
                Ok(())
            }
            Some(Node::Object { .. }) => {
                self.release_all(pairs.into_iter().flat_map(|(k, v)| [k, v]));
                Ok(())
            }
            _ => Err(self.err("SETITEM(S) target is not a dict")),
        }
    }

    // ------------------------------------------------------------------ globals and objects

    fn push_global(&mut self, module: String, name: String) -> Res<()> {
        self.push_leaf(Value::Global { module, name })
    }

    fn text_global(&mut self) -> Res<()> {
        let module = lossy(self.text_line()?);
        let name = lossy(self.text_line()?);
        self.push_global(module, name)
    }

    fn stack_global(&mut self) -> Res<()> {
        let name = self.pop_string()?;
        let module = self.pop_string()?;
        self.push_global(module, name)
    }

    fn pop_string(&mut self) -> Res<String> {
        let id = self.pop()?;
        let text = self
            .str_of(id)
            .map(str::to_string)
            .ok_or_else(|| self.err("STACK_GLOBAL operand is not a string"))?;
        self.release(id);
        Ok(text)
    }

    /// `REDUCE`/`NEWOBJ`: pops the arguments and the callable, pushes the (symbolic) result.
    fn reduce(&mut self) -> Res<()> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let result = self.apply(callable, args, true)?;
        self.release(args);
        self.release(callable);
        self.push(result)
    }

    /// Interprets a call of `callable(*args)` without running anything (see the module docs);
    /// borrows both and returns a new handle.
    fn apply(&mut self, callable: NodeId, args: NodeId, outermost: bool) -> Res<NodeId> {
        let (module, name) = match self.node(callable) {
            Node::Leaf(Value::Global { module, name }) => (module.clone(), name.clone()),
            _ => return Err(self.err("REDUCE/NEWOBJ callable is not a global")),
        };
        let builtin = BUILTINS.contains(&module.as_str());
        let node = match (module.as_str(), name.as_str()) {
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
                Node::Tensor(Box::new(self.tensor_ref(args)?))
            }
            ("torch._utils", "_rebuild_tensor_v3") => {
                let mut tensor = self.tensor_ref(args)?;
                tensor.dtype = Some(self.dtype_arg(args)?);
                Node::Tensor(Box::new(tensor))
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                let tensor = self.arg(args, 0)?;
                return Ok(self.retain(tensor));
            }
            ("torch._tensor", "_rebuild_from_type_v2") if outermost => {
                let (func, inner) = (self.arg(args, 0)?, self.arg(args, 2)?);
                return self.apply(func, inner, false);
            }
            ("collections", "OrderedDict") => Node::Dict(self.dict_from(args, 0)?),
            ("collections", "defaultdict") => Node::Dict(self.dict_from(args, 1)?),
            (_, "dict") if builtin => Node::Dict(self.dict_from(args, 0)?),
            (_, "list" | "set" | "frozenset") if builtin => Node::List(self.seq_from(args)?),
            (_, "tuple") if builtin => Node::Tuple(self.seq_from(args)?),
            _ => Node::Object {
                class: (module, name),
                args: self.retain(args),
                state: None,
            },
        };
        self.new_node(node)
    }

    /// `BUILD`: an object records its state; the state of a dict (instance attributes such as
    /// the `_metadata` that torch sets on state dicts, never items) and of anything else is
    /// dropped.
    fn build(&mut self) -> Res<()> {
        let state = self.pop()?;
        let target = self.top()?;
        let replaced = match self.slots.get_mut(target).map(|slot| &mut slot.node) {
            Some(Node::Object { state: slot, .. }) => slot.replace(state),
            _ => Some(state),
        };
        if let Some(old) = replaced {
            self.release(old);
        }
        Ok(())
    }

    fn items(&self, id: NodeId) -> Option<&[NodeId]> {
        match self.node(id) {
            Node::Tuple(items) | Node::List(items) => Some(items),
            _ => None,
        }
    }

    /// The argument at `index` of the tuple `args`, borrowed.
    fn arg(&self, args: NodeId, index: usize) -> Res<NodeId> {
        self.items(args)
            .and_then(|items| items.get(index).copied())
            .ok_or_else(|| self.err(format!("call is missing argument {index}")))
    }

    /// Entries (new handles) for `dict(x)` / `OrderedDict(x)` / `defaultdict(factory, x)`: `x` is
    /// the argument at `index` (absent: empty), a dict or a sequence of key/value pairs.
    fn dict_from(&mut self, args: NodeId, index: usize) -> Res<Vec<(NodeId, NodeId)>> {
        let source = match self.items(args) {
            Some(items) => items.get(index).copied(),
            None => return Err(self.err("dict constructor arguments are not a tuple")),
        };
        let Some(source) = source else {
            return Ok(Vec::new());
        };
        let len = match self.node(source) {
            Node::Dict(entries) => entries.len(),
            _ => self.items(source).map_or(0, <[NodeId]>::len),
        };
        self.count_copies(len.saturating_mul(2))?;
        self.meter
            .fits(len.saturating_mul(size_of::<(NodeId, NodeId)>()))?;
        let entries = if let Node::Dict(entries) = self.node(source) {
            entries.clone()
        } else {
            let pairs = self
                .items(source)
                .ok_or_else(|| self.err("dict constructor argument is not a dict or a sequence"))?;
            pairs
                .iter()
                .map(|&pair| match self.items(pair) {
                    Some(&[key, value]) => Ok((key, value)),
                    _ => Err(self.err("dict constructor item is not a key/value pair")),
                })
                .collect::<Res<Vec<_>>>()?
        };
        for &(key, value) in &entries {
            self.retain(key);
            self.retain(value);
        }
        Ok(entries)
    }

    /// Items (new handles) for `list(x)` / `tuple(x)` / `set(x)`: `x` absent, a sequence or a
    /// dict (its keys).
    fn seq_from(&mut self, args: NodeId) -> Res<Vec<NodeId>> {
        let Some(source) = self.items(args).map(|items| items.first().copied()) else {
            return Err(self.err("sequence constructor arguments are not a tuple"));
        };
        let len = match source.map(|id| self.node(id)) {
            Some(Node::List(items) | Node::Tuple(items)) => items.len(),
            Some(Node::Dict(entries)) => entries.len(),
            _ => 0,
        };
        self.count_copies(len)?;
        self.meter.fits(len.saturating_mul(size_of::<NodeId>()))?;
        let items = match source.map(|id| self.node(id)) {
            None => Vec::new(),
            Some(Node::List(items) | Node::Tuple(items)) => items.clone(),
            Some(Node::Dict(entries)) => entries.iter().map(|(k, _)| *k).collect(),
            Some(_) => return Err(self.err("sequence constructor argument is not a sequence")),
        };
        for &item in &items {
            self.retain(item);
        }
        Ok(items)
    }

    // ------------------------------------------------------------------ tensors

    fn str_of(&self, id: NodeId) -> Option<&str> {
        match self.node(id) {
            Node::Leaf(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn usize_of(&self, id: NodeId, what: &str) -> Res<usize> {
        match self.node(id) {
            Node::Leaf(Value::Int(i)) => usize::try_from(*i).ok(),
            _ => None,
        }
        .ok_or_else(|| self.err(format!("tensor {what} is not a non-negative integer")))
    }

    fn usizes_of(&self, id: NodeId, what: &str) -> Res<Vec<usize>> {
        let items = self
            .items(id)
            .ok_or_else(|| self.err(format!("tensor {what} is not a tuple")))?;
        items.iter().map(|&i| self.usize_of(i, what)).collect()
    }

    /// Decodes `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
    fn tensor_ref(&self, args: NodeId) -> Res<TensorRef> {
        let Some(&[storage, offset, size, stride, ..]) = self.items(args) else {
            return Err(
                self.err("_rebuild_tensor arguments are not (storage, offset, size, stride, …)")
            );
        };
        let mut tensor = self.storage_ref(storage)?;
        tensor.storage_offset = self.usize_of(offset, "storage offset")?;
        tensor.shape = self.usizes_of(size, "size")?;
        tensor.stride = self.usizes_of(stride, "stride")?;
        if tensor.shape.len() != tensor.stride.len() {
            return Err(self.err("tensor size and stride differ in length"));
        }
        Ok(tensor)
    }

    /// The dtype argument of `_rebuild_tensor_v3(storage, offset, size, stride, requires_grad,
    /// hooks, dtype, …)`: a global `torch.<dtype>`.
    fn dtype_arg(&self, args: NodeId) -> Res<String> {
        match self.node(self.arg(args, 6)?) {
            Node::Leaf(Value::Global { module, name }) if module == "torch" => Ok(name.clone()),
            _ => Err(self.err("_rebuild_tensor_v3 dtype argument is not a torch dtype")),
        }
    }

    /// Decodes the persistent id `('storage', torch.<Type>Storage, key, location, numel)`.
    fn storage_ref(&self, id: NodeId) -> Res<TensorRef> {
        let bad = || {
            self.err(
                "tensor storage is not a ('storage', type, key, location, numel) persistent id",
            )
        };
        let Node::PersistentId(pid) = self.node(id) else {
            return Err(bad());
        };
        let Some(&[tag, class, key, location, numel]) = self.items(*pid) else {
            return Err(bad());
        };
        let storage_type = match self.node(class) {
            Node::Leaf(Value::Global { name, .. }) => name.clone(),
            _ => return Err(bad()),
        };
        let storage_key = match self.node(key) {
            Node::Leaf(Value::Str(s)) => s.clone(),
            Node::Leaf(Value::Int(i)) => i.to_string(),
            _ => return Err(bad()),
        };
        if self.str_of(tag) != Some("storage") {
            return Err(bad());
        }
        Ok(TensorRef {
            storage_key,
            storage_type,
            location: self.str_of(location).ok_or_else(bad)?.to_string(),
            storage_numel: self.usize_of(numel, "storage numel")?,
            storage_offset: 0,
            shape: Vec::new(),
            stride: Vec::new(),
            dtype: None,
        })
    }

    // ------------------------------------------------------------------ graph -> tree

    /// Expands the graph under `root` into a tree, charging the tree to the same budget (the
    /// graph is held meanwhile).
    fn expand(&mut self, root: NodeId) -> Res<Value> {
        let slots = self.slots.len();
        self.meter.charge(slots)?;
        let mut expander = Expander {
            slots: &self.slots,
            on_path: vec![false; slots],
            meter: &mut self.meter,
        };
        let offset = self.op_offset;
        expander
            .value(root, 0)
            .map_err(|e| PickleError { offset, ..e })
    }
}

/// Turns the node graph into a [`Value`] tree, cutting cycles and charging the output to the
/// budget.
struct Expander<'n> {
    slots: &'n [Slot],
    /// Nodes on the path from the root to the node being expanded.
    on_path: Vec<bool>,
    meter: &'n mut Meter,
}

impl Expander<'_> {
    /// Expands node `id`. Only heap bytes are charged: a value's own size is charged by the
    /// vector or box that holds it (the root is inline).
    fn value(&mut self, id: NodeId, depth: usize) -> Res<Value> {
        if depth > MAX_DEPTH {
            return Err(PickleError {
                offset: 0,
                reason: format!("containers nested deeper than {MAX_DEPTH} levels"),
                kind: PickleErrorKind::Malformed,
            });
        }
        let node = self.slots.get(id).map_or(&MISSING, |slot| &slot.node);
        if self.on_path.get(id).copied().unwrap_or(false) {
            return Ok(Value::Cycle);
        }
        self.meter.charge(expanded_heap_bytes(node))?;
        if let Node::Leaf(value) = node {
            return Ok(value.clone());
        }
        if let Some(flag) = self.on_path.get_mut(id) {
            *flag = true;
        }
        let result = self.container(node, depth + 1);
        if let Some(flag) = self.on_path.get_mut(id) {
            *flag = false;
        }
        result
    }

    fn container(&mut self, node: &Node, depth: usize) -> Res<Value> {
        Ok(match node {
            Node::Leaf(value) => value.clone(),
            Node::List(items) => Value::List(self.values(items, depth)?),
            Node::Tuple(items) => Value::Tuple(self.values(items, depth)?),
            Node::Dict(entries) => {
                self.meter
                    .charge(entries.len().saturating_mul(size_of::<(Value, Value)>()))?;
                let mut out = Vec::with_capacity(entries.len());
                for &(k, v) in entries {
                    out.push((self.value(k, depth)?, self.value(v, depth)?));
                }
                Value::Dict(out)
            }
            Node::PersistentId(inner) => Value::PersistentId(self.boxed(*inner, depth)?),
            Node::Object { class, args, state } => Value::Object {
                class: class.clone(),
                args: self.boxed(*args, depth)?,
                state: match state {
                    Some(s) => Some(self.boxed(*s, depth)?),
                    None => None,
                },
            },
            Node::Tensor(tensor) => Value::Tensor(tensor.clone()),
        })
    }

    fn values(&mut self, ids: &[NodeId], depth: usize) -> Res<Vec<Value>> {
        self.meter
            .charge(ids.len().saturating_mul(size_of::<Value>()))?;
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            out.push(self.value(id, depth)?);
        }
        Ok(out)
    }

    fn boxed(&mut self, id: NodeId, depth: usize) -> Res<Box<Value>> {
        self.meter.charge(size_of::<Value>())?;
        Ok(Box::new(self.value(id, depth)?))
    }
}

/// Heap bytes of an expanded tree below its root (vectors by capacity, boxes, strings), as the
/// expander charges them; for [`parse_audited`].
fn value_heap_bytes(value: &Value) -> usize {
    let values = |items: &[Value]| -> usize { items.iter().map(value_heap_bytes).sum() };
    let boxed = |v: &Value| size_of::<Value>() + value_heap_bytes(v);
    match value {
        Value::Str(s) => s.capacity(),
        Value::Bytes(b) => b.capacity(),
        Value::Global { module, name } => module.capacity() + name.capacity(),
        Value::List(items) | Value::Tuple(items) => {
            items.capacity() * size_of::<Value>() + values(items)
        }
        Value::Dict(entries) => {
            entries.capacity() * size_of::<(Value, Value)>()
                + entries
                    .iter()
                    .map(|(k, v)| value_heap_bytes(k) + value_heap_bytes(v))
                    .sum::<usize>()
        }
        Value::PersistentId(inner) => boxed(inner),
        Value::Object { class, args, state } => {
            class.0.capacity()
                + class.1.capacity()
                + boxed(args)
                + state.as_deref().map_or(0, boxed)
        }
        Value::Tensor(t) => size_of::<TensorRef>() + tensor_heap_bytes(t),
        Value::None | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Cycle => 0,
    }
}

/// Heap bytes that the expanded clone of `node` allocates besides its children (a clone's
/// capacity is its length).
fn expanded_heap_bytes(node: &Node) -> usize {
    match node {
        Node::Leaf(Value::Str(s)) => s.len(),
        Node::Leaf(Value::Bytes(b)) => b.len(),
        Node::Leaf(Value::Global { module, name }) => module.len() + name.len(),
        Node::Object { class, .. } => class.0.len() + class.1.len(),
        Node::Tensor(t) => {
            size_of::<TensorRef>()
                + t.storage_key.len()
                + t.storage_type.len()
                + t.location.len()
                + t.dtype.as_ref().map_or(0, String::len)
                + (t.shape.len() + t.stride.len()) * size_of::<usize>()
        }
        Node::Leaf(_) | Node::List(_) | Node::Tuple(_) | Node::Dict(_) | Node::PersistentId(_) => 0,
    }
}

// ---------------------------------------------------------------------- decoding helpers

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `bytes` quoted for an error message, cut after [`MAX_QUOTE`] characters.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(MAX_QUOTE).collect();
    match chars.next() {
        Some(_) => format!("{head:?}… ({} bytes)", bytes.len()),
        None => format!("{head:?}"),
    }
}

fn utf8(bytes: &[u8]) -> Value {
    Value::Str(lossy(bytes))
}

/// A protocol-0/1/2 byte string: a `Str` when it is valid UTF-8 (what Python 3 does for ASCII),
/// else `Bytes`.
fn byte_string(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::Str(s.to_string()),
        Err(_) => Value::Bytes(bytes.to_vec()),
    }
}

/// Parses a protocol-0 decimal integer (`LONG` values may end in `L`); `None` beyond 64 bits.
fn parse_decimal(line: &[u8], long: bool) -> Option<i64> {
    let text = std::str::from_utf8(line).ok()?.trim();
    let text = if long {
        text.strip_suffix('L').unwrap_or(text)
    } else {
        text
    };
    text.parse().ok()
}

/// Decodes a little-endian two's-complement integer of any length; `None` if it exceeds i64.
fn decode_long(bytes: &[u8]) -> Option<i64> {
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let fill = if negative { 0xff } else { 0x00 };
    let (low, high) = bytes.split_at(bytes.len().min(8));
    if high.iter().any(|&b| b != fill) {
        return None;
    }
    let mut raw = [fill; 8];
    raw.iter_mut().zip(low).for_each(|(dst, src)| *dst = *src);
    let value = i64::from_le_bytes(raw);
    (value.is_negative() == negative).then_some(value)
}

/// Strips the matching quotes of a protocol-0 `STRING` operand.
fn unquote(line: &[u8]) -> Option<&[u8]> {
    let (&first, rest) = line.split_first()?;
    let (&last, inner) = rest.split_last()?;
    (first == last && (first == b'\'' || first == b'"')).then_some(inner)
}

/// Decodes the escapes of a Python bytes literal body (`\\`, `\n`, `\x41`, `\101`, …).
fn unescape_bytes(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        let (&code, tail) = rest.split_first()?;
        rest = tail;
        match code {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'v' => out.push(0x0b),
            b'\\' | b'\'' | b'"' => out.push(code),
            b'\n' => {}
            b'x' => {
                let hex = rest.get(..2)?;
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                rest = rest.get(2..)?;
            }
            b'0'..=b'7' => {
                let mut value = u32::from(code - b'0');
                for _ in 0..2 {
                    let Some((&digit @ b'0'..=b'7', tail)) = rest.split_first() else {
                        break;
                    };
                    value = value * 8 + u32::from(digit - b'0');
                    rest = tail;
                }
                out.push(value.to_le_bytes()[0]);
            }
            other => out.extend_from_slice(&[b'\\', other]),
        }
    }
    Some(out)
}

/// Decodes Python's `raw-unicode-escape` (protocol-0 `UNICODE`): bytes are Latin-1 except for
/// `\uXXXX` and `\UXXXXXXXX` escapes.
fn raw_unicode_unescape(line: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some((&byte, tail)) = rest.split_first() {
        let width = match (byte, tail.first()) {
            (b'\\', Some(b'u')) => 4,
            (b'\\', Some(b'U')) => 8,
            _ => 0,
        };
        if width == 0 {
            out.push(char::from(byte));
            rest = tail;
            continue;
        }
        let hex = tail.get(1..=width)?;
        let code = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
        rest = tail.get(width + 1..)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(bytes: &[u8]) -> Value {
        parse(bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    fn fails(bytes: &[u8]) -> PickleError {
        parse(bytes).expect_err("the pickle should be rejected")
    }

    /// `SHORT_BINUNICODE` of `text`.
    fn s(text: &str) -> Vec<u8> {
        [
            &[op::SHORT_BINUNICODE, text.len() as u8][..],
            text.as_bytes(),
        ]
        .concat()
    }

    /// Protocol-0 `GLOBAL module name`.
    fn global(module: &str, name: &str) -> Vec<u8> {
        format!("c{module}\n{name}\n").into_bytes()
    }

    fn str_value(text: &str) -> Value {
        Value::Str(text.to_string())
    }

    #[test]
    fn protocol_0_text_opcodes() {
        let pickle = b"(lp0\nI42\naI01\naL-12345678901234L\naF1.5\naS'a\\x41\\n\\101'\naVcaf\\u00e9\naNag0\na.";
        let Value::List(items) = ok(pickle) else {
            panic!()
        };
        assert_eq!(
            items,
            [
                Value::Int(42),
                Value::Bool(true),
                Value::Int(-12_345_678_901_234),
                Value::Float(1.5),
                str_value("aA\nA"),
                str_value("café"),
                Value::None,
                Value::Cycle,
            ]
        );
    }

    #[test]
    fn binary_integers_and_longs() {
        let int = |body: &[u8]| ok(&[body, b"."].concat());
        assert_eq!(int(b"J\xff\xff\xff\xff"), Value::Int(-1));
        assert_eq!(int(b"K\xff"), Value::Int(255));
        assert_eq!(int(b"M\xff\xff"), Value::Int(65535));
        assert_eq!(int(b"\x8a\x00"), Value::Int(0));
        assert_eq!(int(b"\x8a\x02\x00\x80"), Value::Int(-32768));
        assert_eq!(
            int(b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f"),
            Value::Int(i64::MAX)
        );
        assert_eq!(
            int(b"\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
            Value::Int(-1)
        );
        assert_eq!(int(b"\x8b\x01\x00\x00\x00\x05"), Value::Int(5));
        let too_big = fails(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.");
        assert!(too_big.reason.contains("64 bits"), "{too_big}");
        assert_eq!(
            int(b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80"),
            Value::Int(i64::MIN)
        );
        assert_eq!(
            fails(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00.").offset,
            0
        );
        assert!(fails(b"L99999999999999999999L\n.")
            .reason
            .contains("64 bits"));
        assert!(fails(b"\x8b\xff\xff\xff\xff.")
            .reason
            .contains("invalid length"));
        assert_eq!(int(b"G\x3f\xf8\x00\x00\x00\x00\x00\x00"), Value::Float(1.5));
    }

    #[test]
    fn strings_and_bytes() {
        let value = |body: &[u8]| ok(&[body, b"."].concat());
        assert_eq!(value(b"X\x02\x00\x00\x00hi"), str_value("hi"));
        assert_eq!(
            value(b"\x8d\x01\x00\x00\x00\x00\x00\x00\x00z"),
            str_value("z")
        );
        assert_eq!(value(b"U\x02ok"), str_value("ok"));
        assert_eq!(value(b"U\x01\xff"), Value::Bytes(vec![0xff]));
        assert_eq!(value(b"T\x01\x00\x00\x00a"), str_value("a"));
        assert_eq!(value(b"C\x02\x00\x01"), Value::Bytes(vec![0, 1]));
        assert_eq!(value(b"B\x01\x00\x00\x00\x07"), Value::Bytes(vec![7]));
        assert_eq!(
            value(b"\x96\x01\x00\x00\x00\x00\x00\x00\x00\x08"),
            Value::Bytes(vec![8])
        );
        assert_eq!(
            value(b"\x8e\x00\x00\x00\x00\x00\x00\x00\x00"),
            Value::Bytes(vec![])
        );
        let e = fails(b"X\xe8\x03\x00\x00abc.");
        assert_eq!(e.offset, 0);
        assert!(
            e.reason.contains("length 1000 exceeds the 4 bytes left"),
            "{e}"
        );
    }

    #[test]
    fn containers_have_reference_semantics() {
        // EMPTY_LIST, memo 0; EMPTY_DICT, memo 1; APPEND; then fill the dict through the memo.
        let pickle = [b"]q\x00}q\x01ah\x01".as_slice(), &s("k"), b"K\x01s0."].concat();
        let expected = Value::List(vec![Value::Dict(vec![(str_value("k"), Value::Int(1))])]);
        assert_eq!(ok(&pickle), expected);
        // a shared (not cyclic) list appears twice; a self-containing list is cut with Cycle
        assert_eq!(
            ok(b"(]q\x00h\x00t."),
            Value::Tuple(vec![Value::List(vec![]), Value::List(vec![])])
        );
        assert_eq!(ok(b"]q\x00h\x00a."), Value::List(vec![Value::Cycle]));
        // DUP, POP, POP_MARK, tuples, dicts, sets
        assert_eq!(
            ok(b"K\x012\x86."),
            Value::Tuple(vec![Value::Int(1), Value::Int(1)])
        );
        assert_eq!(ok(b"K\x01K\x020."), Value::Int(1));
        assert_eq!(ok(b"K\x01(K\x02K\x031."), Value::Int(1));
        assert_eq!(ok(b"K\x01(0."), Value::Int(1));
        let three = Value::Tuple(vec![Value::Int(1), Value::Int(2), Value::Int(3)]);
        assert_eq!(ok(b"K\x01K\x02K\x03\x87."), three);
        assert_eq!(
            ok(b"(K\x01K\x02d."),
            Value::Dict(vec![(Value::Int(1), Value::Int(2))])
        );
        assert_eq!(
            ok(b"\x8f(K\x01K\x02\x90."),
            Value::List(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(ok(b"(K\x01\x91."), Value::List(vec![Value::Int(1)]));
        assert_eq!(
            ok(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94h\x00a."),
            Value::List(vec![Value::Cycle])
        );
    }

    #[test]
    fn interpreted_globals_build_plain_containers() {
        let pairs = b"((K\x01K\x02t(K\x03K\x04tl\x85R.";
        let ordered = ok(&[global("collections", "OrderedDict"), pairs.to_vec()].concat());
        assert_eq!(
            ordered,
            Value::Dict(vec![
                (Value::Int(1), Value::Int(2)),
                (Value::Int(3), Value::Int(4))
            ])
        );
        let defaultdict = [
            global("collections", "defaultdict"),
            global("__builtin__", "dict"),
            b"\x85R.".to_vec(),
        ]
        .concat();
        assert_eq!(ok(&defaultdict), Value::Dict(vec![]));
        let set = [global("builtins", "set"), b"(K\x07l\x85R.".to_vec()].concat();
        assert_eq!(ok(&set), Value::List(vec![Value::Int(7)]));
        let tuple = [global("__builtin__", "tuple"), b"(K\x07l\x85R.".to_vec()].concat();
        assert_eq!(ok(&tuple), Value::Tuple(vec![Value::Int(7)]));
        // torch's `_metadata` BUILD on a state-dict OrderedDict is an attribute: the dict stays.
        let with_state = [
            global("collections", "OrderedDict"),
            b")R".to_vec(),
            s("a"),
            b"K\x01s}".to_vec(),
            s("_metadata"),
            b"K\x00sb.".to_vec(),
        ]
        .concat();
        assert_eq!(
            ok(&with_state),
            Value::Dict(vec![(str_value("a"), Value::Int(1))])
        );
    }

    #[test]
    fn other_globals_are_inert_objects() {
        let system = [
            global("os", "system"),
            s("touch /tmp/x"),
            b"\x85R.".to_vec(),
        ]
        .concat();
        let expected = Value::Object {
            class: ("os".into(), "system".into()),
            args: Box::new(Value::Tuple(vec![str_value("touch /tmp/x")])),
            state: None,
        };
        assert_eq!(ok(&system), expected);
        // protocol 4: STACK_GLOBAL + NEWOBJ of a dict subclass, items dropped, BUILD state kept
        let dict_config = [
            b"\x80\x04".to_vec(),
            s("omegaconf.dictconfig"),
            s("DictConfig"),
            b"\x93)\x81".to_vec(),
            s("k"),
            b"K\x01s}".to_vec(),
            s("_flags"),
            b"\x88sb.".to_vec(),
        ]
        .concat();
        let Value::Object { class, args, state } = ok(&dict_config) else {
            panic!()
        };
        assert_eq!(class, ("omegaconf.dictconfig".into(), "DictConfig".into()));
        assert_eq!(*args, Value::Tuple(vec![]));
        assert_eq!(
            state.as_deref(),
            Some(&Value::Dict(vec![(str_value("_flags"), Value::Bool(true))]))
        );
        let e = fails(b"K\x01)R.");
        assert!(e.reason.contains("callable is not a global"), "{e}");
    }

    /// `_rebuild_tensor_v2(('storage', torch.FloatStorage, '0', 'cuda:0', 6), 1, (2, 2), (3, 1), False, OrderedDict())`.
    fn tensor_pickle() -> Vec<u8> {
        [
            b"\x80\x02".to_vec(),
            global("torch._utils", "_rebuild_tensor_v2"),
            b"((".to_vec(),
            s("storage"),
            global("torch", "FloatStorage"),
            s("0"),
            s("cuda:0"),
            b"K\x06tQK\x01K\x02K\x02\x86K\x03K\x01\x86\x89".to_vec(),
            global("collections", "OrderedDict"),
            b")RtR".to_vec(),
        ]
        .concat()
    }

    #[test]
    fn torch_tensors_and_parameters() {
        let expected = Value::Tensor(Box::new(TensorRef {
            storage_key: "0".into(),
            storage_type: "FloatStorage".into(),
            location: "cuda:0".into(),
            storage_numel: 6,
            storage_offset: 1,
            shape: vec![2, 2],
            stride: vec![3, 1],
            dtype: None,
        }));
        assert_eq!(ok(&[tensor_pickle(), b".".to_vec()].concat()), expected);
        let parameter = [
            global("torch._utils", "_rebuild_parameter"),
            b"(".to_vec(),
            tensor_pickle(),
            b"\x88}tR.".to_vec(),
        ]
        .concat();
        assert_eq!(ok(&parameter), expected);
        let bad_storage = [
            global("torch._utils", "_rebuild_tensor_v2"),
            b"(K\x00K\x00)).".to_vec(),
        ]
        .concat();
        assert!(
            fails(&[&bad_storage[..bad_storage.len() - 1], b"tR."].concat())
                .reason
                .contains("persistent id")
        );
        let other_pid = ok(b"K\x05Q.");
        assert_eq!(other_pid, Value::PersistentId(Box::new(Value::Int(5))));
        assert_eq!(
            ok(b"Pabc\n."),
            Value::PersistentId(Box::new(str_value("abc")))
        );
    }

    #[test]
    fn errors_name_offset_and_cause() {
        let e = fails(b"\x80\x02K\x01\xff.");
        assert_eq!(
            (e.offset, e.reason.as_str()),
            (4, "unknown or unsupported opcode 0xff")
        );
        assert!(e.to_string().starts_with("pickle byte 4: "));
        assert!(fails(b"").reason.contains("truncated"));
        assert!(fails(b"K").reason.contains("truncated"));
        assert!(fails(b"a.").reason.contains("stack underflow"));
        assert!(fails(b"(.").reason.contains("stack underflow"));
        assert!(fails(b"\x80\x06.").reason.contains("protocol 6"));
        assert!(fails(b"h\x05.").reason.contains("memo entry 5"));
        assert!(fails(b"\x82\x01.").reason.contains("EXT1"));
        assert!(fails(b"K\x01K\x02a.").reason.contains("not a list"));
        assert!(fails(b"(K\x01d.").reason.contains("odd number"));
        assert!(fails(b"t.").reason.contains("no MARK"));
    }

    #[test]
    fn deep_nesting_and_reference_bombs_are_refused() {
        let depth = 100_000;
        let deep = [vec![b']'; depth], vec![b'a'; depth - 1], vec![b'.']].concat();
        assert!(fails(&deep).reason.contains("nested deeper"));
        // each level is a list holding the previous level twice: 2^40 leaves if expanded
        let mut bomb = b"]q\x00".to_vec();
        for level in 1..=40u8 {
            bomb.extend_from_slice(&[b'(', b'h', level - 1, b'h', level - 1, b'l', b'q', level]);
        }
        bomb.push(b'.');
        let e = fails(&bomb);
        assert_eq!(e.kind, PickleErrorKind::OverBudget, "{e}");
        assert!(e.reason.contains("memory budget of"), "{e}");
    }

    /// Xorshift64: a deterministic pseudo-random sequence without a dependency.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let opcodes = b"(.012FIJKLMNPQRSTUVXabcdeghjlpqrstu}])GBC\x80\x81\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96";
        let seeds = [
            tensor_pickle(),
            b"(lp0\nI42\naI01\naL-1L\naF1.5\naS'a\\x41'\naVcaf\\u00e9\naNag0\n.".to_vec(),
            [
                global("collections", "OrderedDict"),
                b"((K\x01K\x02t(K\x03K\x04tl\x85R.".to_vec(),
            ]
            .concat(),
            b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94h\x00a.".to_vec(),
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..4000 {
            let input: Vec<u8> = if round % 2 == 0 {
                let len = xorshift(&mut state) % 48;
                (0..len)
                    .map(|_| match xorshift(&mut state) % 4 {
                        0 => xorshift(&mut state) as u8,
                        _ => opcodes[(xorshift(&mut state) as usize) % opcodes.len()],
                    })
                    .collect()
            } else {
                let mut bytes = seeds[round % seeds.len()].clone();
                for _ in 0..1 + xorshift(&mut state) % 3 {
                    let at = (xorshift(&mut state) as usize) % bytes.len();
                    match xorshift(&mut state) % 3 {
                        0 => bytes[at] = xorshift(&mut state) as u8,
                        1 => bytes
                            .insert(at, opcodes[(xorshift(&mut state) as usize) % opcodes.len()]),
                        _ => bytes.truncate(at.max(1)),
                    }
                }
                bytes
            };
            let _ = parse(&input);
        }
    }
}
