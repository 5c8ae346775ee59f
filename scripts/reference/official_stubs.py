"""Stand-ins for the packages that the official modules import but the reference scripts never
use, installed in `sys.modules` before the official import (shared by `nerv_families.py`,
`compression.py` and `bench_official.py`).

`stub_unused_imports()` covers what `HNeRV/model_all.py` imports (decord, matplotlib, timm,
torchvision, kornia, pycocotools; timm's `trunc_normal_` is torch's own and `DropPath` the
identity: the drop rate is 0), using the real torchvision where it is installed.
`stub_unused_imports(everything=True)` also covers the modules the timed calls load
(`image_inr`'s Lightning model and data code, `get_mappings.py`: lightning, cv2, PIL, omegaconf,
easydict, compress_pickle, pytorch_msssim), every one replaced unconditionally, so that every
interpreter runs the same code.
"""

import sys
import types

import torch


def module(name, **attrs):
    """An importable stand-in module (a package too: `from a.b import c` works)."""
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    m.__path__ = []
    sys.modules[name] = m
    return m


def stub_unused_imports(everything=False):
    module("decord", bridge=types.SimpleNamespace(set_bridge=lambda *_: None))
    module("matplotlib")
    module("matplotlib.path", Path=object)
    module("timm")
    module("timm.models")
    module("timm.models.layers", DropPath=lambda *_: torch.nn.Identity(),
           trunc_normal_=lambda t, std=1.0: torch.nn.init.trunc_normal_(t, std=std))
    try:
        if everything:
            raise ImportError
        import torchvision  # noqa: F401
    except ImportError:
        module("torchvision")
        module("torchvision.io", read_image=None)
        module("torchvision.transforms", CenterCrop=None, Resize=None)
        module("torchvision.transforms.functional", center_crop=None, resize=None)
    module("kornia")
    module("kornia.color", rgb_to_lab=None)
    module("pycocotools")
    module("pycocotools.coco", COCO=object)
    if not everything:
        return
    module("pytorch_msssim", ssim=None, ms_ssim=None)
    module("lightning", LightningModule=torch.nn.Module)
    module("cv2")
    module("PIL", Image=None)
    module("PIL.Image")
    module("omegaconf", DictConfig=dict, OmegaConf=None)
    module("easydict", EasyDict=dict)
    module("compress_pickle")
