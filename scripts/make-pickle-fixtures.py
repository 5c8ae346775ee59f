#!/usr/bin/env python3
"""Writes tiny torch.save-format checkpoints for the tests of src/io/torch.rs and src/io/pickle.rs.

Pure Python 3, standard library only: torch is NOT needed (and must not be installed for this).
The torch globals (`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`, ...) are emitted by
registering stand-in modules in `sys.modules` whose functions and classes carry the right
`__module__`/`__qualname__`; pickle then names them by reference, exactly as torch.save does. The
stand-ins are never called. Storages go out through `persistent_id` as
('storage', <storage class>, key, location, numel), and their bytes become `<prefix>/data/<key>`
entries of a stored (uncompressed) zip, like torch's zip writer.

Run from anywhere:  python3 scripts/make-pickle-fixtures.py
Output: tests/fixtures/pickles/*.pt|*.ckpt (deterministic bytes; commit them).

Fixtures and the values the Rust tests assert:
  plain_state_dict.pt   protocol 2, prefix `archive/`; OrderedDict state_dict with `_metadata`:
      linear.weight   f32 [2,3] = [[1,2,3],[4,5,6]]            (storage "0")
      linear.weight_t f32 [3,2] stride (1,3) = [[1,4],[2,5],[3,6]] (same storage "0", transposed)
      step            i64 []    = 7                            (0-d)
      window          f32 [2,2] offset 1 stride (3,1) over [10..15] = [[11,12],[14,15]]
      every_other     f32 [3]   stride (2,) over [10..15]       = [10,12,14]
      expanded        f32 [2,2] stride (0,1) over [9,8]         = [[9,8],[9,8]]
      empty           f32 [0,3]
      half f16 [1.5,-2], bf16 [1,-0.5,3], double f64 [0.1,-2.5], int32 [-3,4], int16 [-300],
      int8 [-5,6], uint8 [200,1], mask bool [1,0,1]
  lightning_p2.ckpt     protocol 2, prefix `best_model/`; a Lightning-style checkpoint: epoch 999,
      global_step 1000, state_dict {model.net.0.weight (nn.Parameter) [2,3] = [[.5,-1,2],[0,.25,-.75]],
      model.net.0.bias (nn.Parameter) [2] = [.1,-.2], model.B [3,2] = 0..5 on 'cuda:0'},
      hyper_parameters.cfg = a dict subclass `omegaconf.dictconfig.DictConfig` whose state
      `_content.common` is a child DictConfig with `_parent` pointing back to cfg (a cycle),
      optimizer states with DoubleStorage tensors,
      collections.defaultdict(dict), typing.Any, extra.ema.w f32 [2] = [3,4].
  lightning_p4.ckpt     the same object, protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL).
  malicious.pt          protocol 2: REDUCE of `os.system('touch /tmp/xinc_pwned')` and of
      `builtins.eval(...)` next to state_dict {weight f32 [3] = [1,2,3], evil: <os.system object>}.
  truncated.pt          the first half of plain_state_dict.pt's bytes (not a zip any more).
  truncated_pickle.pt   a valid zip whose data.pkl is plain_state_dict's pickle cut in half.
  short_storage.pt      plain_state_dict with storage "0" cut to 8 bytes (linear.weight needs 24).
  tiny_nerv.pth         protocol 2, an official-style NeRV checkpoint {epoch: 10, state_dict,
      optimizer: None} for the flags `--embed pe_1.25_4 --fc_hw 1_2 --dec_strds 2 2 --ks 0_3_3
      --reduce 1.2 --modelsize 0.0005 --lower_width 2` (fc_dim 2, widths 2-2-2, frames 4x8), every
      key prefixed `module.blocks.0.` (both stripped on import); tensor number n (in the order
      below) holds the values 0.1*sin(1000*n + i), i = 0, 1, ... in C order.
"""
import builtins
import math
import collections
import io
import os
import pickle
import struct
import sys
import types
import typing
import zipfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "pickles")


# ----------------------------------------------------------------------------- stand-in globals
def fake_module(name):
    """Registers (or returns) a module named `name` and its parents in sys.modules."""
    parent, _, child = name.rpartition(".")
    if parent:
        fake_module(parent)
    mod = sys.modules.get(name)
    if mod is None:
        mod = types.ModuleType(name)
        sys.modules[name] = mod
        if parent:
            setattr(sys.modules[parent], child, mod)
    return mod


def fake_function(module, name):
    """A function that pickles as the global `module.name`; calling it is an error."""

    def stub(*_args, **_kwargs):
        raise RuntimeError(f"fixture stub {module}.{name} must never be called")

    stub.__module__, stub.__qualname__, stub.__name__ = module, name, name
    setattr(fake_module(module), name, stub)
    return stub


def fake_class(module, name, base=object):
    """A class that pickles as the global `module.name`."""
    cls = type(name, (base,), {"__module__": module, "__qualname__": name})
    setattr(fake_module(module), name, cls)
    return cls


REBUILD_TENSOR_V2 = fake_function("torch._utils", "_rebuild_tensor_v2")
REBUILD_PARAMETER = fake_function("torch._utils", "_rebuild_parameter")
STORAGE_FORMATS = {  # torch storage class name -> struct format of one element
    "FloatStorage": "f",
    "DoubleStorage": "d",
    "HalfStorage": "e",
    "BFloat16Storage": None,  # upper 16 bits of the float32 pattern
    "LongStorage": "q",
    "IntStorage": "i",
    "ShortStorage": "h",
    "CharStorage": "b",
    "ByteStorage": "B",
    "BoolStorage": "?",
}
STORAGE_CLASSES = {name: fake_class("torch", name) for name in STORAGE_FORMATS}
DictConfig = fake_class("omegaconf.dictconfig", "DictConfig", dict)
Metadata = fake_class("omegaconf.base", "Metadata")


class Storage:
    """A typed storage: pickled only through persistent_id, its bytes become data/<key>."""

    def __init__(self, kind, values, key, location="cpu"):
        self.kind, self.values, self.key, self.location = kind, list(values), key, location

    def data(self):
        fmt = STORAGE_FORMATS[self.kind]
        if fmt is None:
            return b"".join(struct.pack("<f", v)[2:] for v in self.values)
        return struct.pack("<" + fmt * len(self.values), *self.values)


class Tensor:
    """Pickles like torch.Tensor: _rebuild_tensor_v2(storage, offset, size, stride, False, {})."""

    def __init__(self, storage, shape, stride=None, offset=0):
        self.storage, self.shape, self.offset = storage, tuple(shape), offset
        self.stride = tuple(stride) if stride is not None else contiguous_stride(self.shape)

    def __reduce_ex__(self, _protocol):
        hooks = collections.OrderedDict()
        return (REBUILD_TENSOR_V2, (self.storage, self.offset, self.shape, self.stride, False, hooks))


class Parameter:
    """Pickles like nn.Parameter: _rebuild_parameter(tensor, requires_grad, hooks)."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce_ex__(self, _protocol):
        return (REBUILD_PARAMETER, (self.tensor, True, collections.OrderedDict()))


def contiguous_stride(shape):
    stride, acc = [], 1
    for dim in reversed(shape):
        stride.insert(0, acc)
        acc *= dim
    return tuple(stride)


class TorchPickler(pickle.Pickler):
    """Sends storages out of band, as torch.save's persistent_id does."""

    def __init__(self, file, protocol, storages):
        super().__init__(file, protocol)
        self.storages = storages

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            self.storages[obj.key] = obj
            return ("storage", STORAGE_CLASSES[obj.kind], obj.key, obj.location, len(obj.values))
        return None


# ----------------------------------------------------------------------------- writing
def dump(obj, protocol):
    buf, storages = io.BytesIO(), {}
    TorchPickler(buf, protocol, storages).dump(obj)
    return buf.getvalue(), storages


def write_zip(name, entries):
    path = os.path.join(OUT, name)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for entry_name, data in entries:
            info = zipfile.ZipInfo(entry_name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return path


def checkpoint_entries(obj, protocol, prefix, storage_override=None):
    pkl, storages = dump(obj, protocol)
    data = {key: s.data() for key, s in storages.items()}
    data.update(storage_override or {})
    entries = [(f"{prefix}/data.pkl", pkl), (f"{prefix}/byteorder", b"little")]
    entries += [(f"{prefix}/data/{key}", data[key]) for key in sorted(data)]
    entries.append((f"{prefix}/version", b"3\n"))
    return entries


def write_checkpoint(name, obj, protocol, prefix="archive", storage_override=None):
    return write_zip(name, checkpoint_entries(obj, protocol, prefix, storage_override))


# ----------------------------------------------------------------------------- fixtures
TINY_NERV = [
    ("decoder.0.conv.downconv.weight", [4, 8, 1, 1]),
    ("decoder.0.conv.downconv.bias", [4]),
    ("decoder.1.conv.upconv.0.weight", [8, 2, 3, 3]),
    ("decoder.1.conv.upconv.0.bias", [8]),
    ("decoder.2.conv.upconv.0.weight", [8, 2, 3, 3]),
    ("decoder.2.conv.upconv.0.bias", [8]),
    ("head_layer.weight", [3, 2, 3, 3]),
    ("head_layer.bias", [3]),
]


def tiny_nerv_checkpoint():
    sd = collections.OrderedDict()
    for n, (name, shape) in enumerate(TINY_NERV):
        count = 1
        for d in shape:
            count *= d
        values = [0.1 * math.sin(1000 * n + i) for i in range(count)]
        sd["module.blocks.0." + name] = Tensor(Storage("FloatStorage", values, str(n)), shape)
    return {"epoch": 10, "state_dict": sd, "optimizer": None}


def plain_state_dict():
    weight = Storage("FloatStorage", [1, 2, 3, 4, 5, 6], "0")
    ramp = Storage("FloatStorage", [10, 11, 12, 13, 14, 15], "2")
    sd = collections.OrderedDict()
    sd["linear.weight"] = Tensor(weight, [2, 3])
    sd["linear.weight_t"] = Tensor(weight, [3, 2], stride=[1, 3])
    sd["step"] = Tensor(Storage("LongStorage", [7], "1"), [])
    sd["window"] = Tensor(ramp, [2, 2], stride=[3, 1], offset=1)
    sd["every_other"] = Tensor(ramp, [3], stride=[2])
    sd["expanded"] = Tensor(Storage("FloatStorage", [9, 8], "3"), [2, 2], stride=[0, 1])
    sd["empty"] = Tensor(Storage("FloatStorage", [], "4"), [0, 3])
    sd["half"] = Tensor(Storage("HalfStorage", [1.5, -2.0], "5"), [2])
    sd["bf16"] = Tensor(Storage("BFloat16Storage", [1.0, -0.5, 3.0], "6"), [3])
    sd["double"] = Tensor(Storage("DoubleStorage", [0.1, -2.5], "7"), [2])
    sd["int32"] = Tensor(Storage("IntStorage", [-3, 4], "8"), [2])
    sd["int16"] = Tensor(Storage("ShortStorage", [-300], "9"), [1])
    sd["int8"] = Tensor(Storage("CharStorage", [-5, 6], "10"), [2])
    sd["uint8"] = Tensor(Storage("ByteStorage", [200, 1], "11"), [2])
    sd["mask"] = Tensor(Storage("BoolStorage", [True, False, True], "12"), [3])
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("linear", {"version": 1})])
    return sd


def hyper_parameters():
    # Items of the dict subclass, and OmegaConf-like instance state: `_content` holds a child
    # config whose `_parent` points back to `cfg` (a reference cycle).
    cfg = DictConfig(lr=0.0009, layers=[104, 104], name="ffn")
    common = DictConfig(seed=5817)
    common._parent = cfg
    cfg._metadata = Metadata()
    cfg._metadata.ref_type = typing.Any
    cfg._content = {"common": common}
    return {"cfg": cfg}


def lightning_checkpoint():
    weight = Storage("FloatStorage", [0.5, -1.0, 2.0, 0.0, 0.25, -0.75], "0")
    bias = Storage("FloatStorage", [0.1, -0.2], "1")
    fourier = Storage("FloatStorage", [0, 1, 2, 3, 4, 5], "2", location="cuda:0")
    sd = collections.OrderedDict()
    sd["model.net.0.weight"] = Parameter(Tensor(weight, [2, 3]))
    sd["model.net.0.bias"] = Parameter(Tensor(bias, [2]))
    sd["model.B"] = Tensor(fourier, [3, 2])
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("model", {"version": 1})])
    step = Tensor(Storage("DoubleStorage", [1000.0], "3"), [])
    exp_avg = Tensor(Storage("FloatStorage", [0.0] * 6, "4"), [2, 3])
    score = Tensor(Storage("DoubleStorage", [35.95], "5", location="cuda:0"), [])
    return {
        "epoch": 999,
        "global_step": 1000,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": sd,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 1000}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_psnr'}": {"best_model_score": score}},
        "optimizer_states": [{"state": {0: {"step": step, "exp_avg": exp_avg}},
                              "param_groups": [{"lr": 0.0009, "params": [0, 1]}]}],
        "lr_schedulers": [],
        "hparams_name": "cfg",
        "hyper_parameters": hyper_parameters(),
        "resolver_cache": collections.defaultdict(dict),
        "tags": {1, 2, 3},  # ints: a set order that does not depend on hash seeds
        "any": typing.Any,
        "extra": {"ema": {"w": Tensor(Storage("FloatStorage", [3.0, 4.0], "6"), [2])}},
    }


class Evil:
    """REDUCEs to callable(*args): a real unpickler would run it."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def malicious_checkpoint():
    # The real os.system pickles as `posix system`; the stub, patched into `os` only while
    # pickling (main() restores it), makes the file name `os system` literally.
    system_stub = fake_function("os", "system")
    sd = collections.OrderedDict()
    sd["weight"] = Tensor(Storage("FloatStorage", [1, 2, 3], "0"), [3])
    sd["evil"] = Evil(system_stub, "touch /tmp/xinc_pwned")
    return {
        "payload": Evil(system_stub, "touch /tmp/xinc_pwned"),
        "payload_eval": Evil(builtins.eval, "__import__('os').system('touch /tmp/xinc_pwned')"),
        "state_dict": sd,
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    plain = write_checkpoint("plain_state_dict.pt", plain_state_dict(), 2)
    write_checkpoint("lightning_p2.ckpt", lightning_checkpoint(), 2, prefix="best_model")
    write_checkpoint("lightning_p4.ckpt", lightning_checkpoint(), 4)
    real_system = os.system
    try:
        write_checkpoint("malicious.pt", malicious_checkpoint(), 2)
    finally:
        os.system = real_system
    with open(plain, "rb") as f:
        whole = f.read()
    with open(os.path.join(OUT, "truncated.pt"), "wb") as f:
        f.write(whole[: len(whole) // 2])
    entries = checkpoint_entries(plain_state_dict(), 2, "archive")
    pkl = entries[0][1]
    write_zip("truncated_pickle.pt", [(entries[0][0], pkl[: len(pkl) // 2])] + entries[1:])
    write_checkpoint("tiny_nerv.pth", tiny_nerv_checkpoint(), 2)
    short = {"0": struct.pack("<2f", 1, 2)}
    write_checkpoint("short_storage.pt", plain_state_dict(), 2, storage_override=short)
    for name in sorted(os.listdir(OUT)):
        print(f"{os.path.getsize(os.path.join(OUT, name)):6d}  {name}")


if __name__ == "__main__":
    main()
