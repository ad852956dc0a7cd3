"""GPU types as jobs ask for them (``--gres=gpu:a100:2``, ``-G h100:1``): one short lowercase
word per model, made from NVML's product name the same way on every node, so that a type a
user learns on one machine means the same GPU on all of them.

``normalise("NVIDIA H100 80GB HBM3") == "h100"``, ``"NVIDIA A100-SXM4-40GB" -> "a100"``,
``"NVIDIA GeForce RTX 4090" -> "rtx4090"``, ``"Tesla V100-SXM2-16GB" -> "v100"``,
``"NVIDIA L40S" -> "l40s"``, ``"NVIDIA RTX A6000" -> "a6000"``.

A MIG slice's type is its profile, as NVML names it: ``"NVIDIA H100 80GB HBM3 MIG 1g.10gb"``
is ``1g.10gb`` (:func:`mig_profile`; ``1c.2g.20gb`` for a compute instance smaller than its
GPU instance, ``1g.10gb+me`` with media extensions).
"""

from __future__ import annotations

import re

# Vendor and family words that say nothing about which GPU it is.
_NOISE = {"nvidia", "tesla", "geforce", "quadro", "pcie", "sxm", "sxm2", "sxm4", "sxm5", "nvl"}
# A word naming the model: a letter or two then digits (a100, h100, l40s, t4, v100, gh200),
# or rtx/gtx/titan followed by one (rtx 4090 -> rtx4090, rtx a6000 -> a6000).
_MODEL = re.compile(r"^(?:[a-z]{1,2}\d{1,4}[a-z]?|\d{3,4}(?:ti)?)$")
_TYPE = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,31}$")
_PROFILE = r"(?:\d+c\.)?\d+g\.\d+gb(?:\+me)?"
_MIG_NAME = re.compile(r"\bmig\s+(" + _PROFILE + r")\b", re.IGNORECASE)
_MIG_PROFILE = re.compile(r"^" + _PROFILE + r"$")


def normalise(name: str) -> str:
    """The type of a GPU named ``name`` by NVML ("" if nothing in the name looks like one)."""
    words = [w for w in re.split(r"[\s_/-]+", name.lower()) if w and w not in _NOISE]
    for i, word in enumerate(words):
        if word in ("rtx", "gtx") and i + 1 < len(words):
            following = words[i + 1]
            if following.isdigit() or re.match(r"^\d{3,4}(?:ti)?$", following):
                return word + following
            if _MODEL.match(following):
                return following
            continue
        if _MODEL.match(word) and not re.match(r"^\d+(?:gb|g)$", word) and not word.isdigit():
            return word
    return ""


def mig_profile(name: str) -> str:
    """The MIG profile in an NVML device name ("" for a whole GPU's name)."""
    found = _MIG_NAME.search(name)
    return found.group(1).lower() if found else ""


def is_mig_profile(text: str) -> bool:
    """Whether ``text`` is a MIG profile (``1g.10gb``, ``3g.40gb``, ``1c.2g.20gb``)."""
    return bool(_MIG_PROFILE.match(text))


def mig_memory_bytes(profile: str) -> int:
    """The memory a profile names (``3g.40gb``: 40 GiB)."""
    return int(profile.split(".")[-1].split("gb")[0]) << 30


def mig_compute_slices(profile: str) -> int:
    """The GPU's compute slices a profile takes (``3g.40gb``: 3; ``1c.2g.20gb``: 2)."""
    return int(profile.split("g.")[0].rpartition(".")[2])


def valid_type(text: str) -> bool:
    """Whether ``text`` can name a GPU type (what a user may write in TYPE)."""
    return bool(_TYPE.match(text))
