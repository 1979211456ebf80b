"""Stand-ins for packages EasyEdit imports at package import time but the three editors (FT-M,
GRACE, WISE) never call: multimodal trainers, API clients, vision and plotting libraries.

``import easyeditor`` runs ``easyeditor/__init__.py``, which imports every editor, trainer and
dataset module of the release; those import timm, cv2, openai, ... at module level. Each name in
STUBBED becomes an empty module whose every attribute is a dummy class, so those imports succeed;
calling anything from them raises. Nothing of EasyEdit's own code is changed.
"""

import importlib.abc
import importlib.machinery
import sys
import types

STUBBED = (
    "timm", "cv2", "openai", "zhipuai", "sentence_transformers", "matplotlib", "iopath",
    "fairscale", "av", "qwen_vl_utils", "nltk", "rouge", "gpustat", "decord", "webdataset",
    "seaborn", "dashscope", "spacy", "jsonlines", "wandb", "torchvision", "peft", "datasets",
)
USED = set()  # the stubbed names something actually imported


class _Meta(type):
    def __getattr__(cls, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Dummy


class _Dummy(metaclass=_Meta):
    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        raise RuntimeError("a stubbed package was called (fidelity/easyedit/ee_stubs.py)")

    def __getattr__(self, name):
        return _Dummy()



class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Dummy


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in STUBBED:
            USED.add(fullname.split(".")[0])
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def install() -> None:
    sys.meta_path.insert(0, _Finder())
