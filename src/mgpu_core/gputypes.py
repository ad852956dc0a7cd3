"""GPU types as jobs ask for them (``--gres=gpu:a100:2``, ``-G h100:1``): one short lowercase
word per model, made from NVML's product name the same way on every node, so that a type a
user learns on one machine means the same GPU on all of them.

``normalise("NVIDIA H100 80GB HBM3") == "h100"``, ``"NVIDIA A100-SXM4-40GB" -> "a100"``,
``"NVIDIA GeForce RTX 4090" -> "rtx4090"``, ``"Tesla V100-SXM2-16GB" -> "v100"``,
``"NVIDIA L40S" -> "l40s"``, ``"NVIDIA RTX A6000" -> "a6000"``. MIG profiles (``1g.10gb``)
are types too (issue 15).
"""

from __future__ import annotations

import re

# Vendor and family words that say nothing about which GPU it is.
_NOISE = {"nvidia", "tesla", "geforce", "quadro", "pcie", "sxm", "sxm2", "sxm4", "sxm5", "nvl"}
# A word naming the model: a letter or two then digits (a100, h100, l40s, t4, v100, gh200),
# or rtx/gtx/titan followed by one (rtx 4090 -> rtx4090, rtx a6000 -> a6000).
_MODEL = re.compile(r"^(?:[a-z]{1,2}\d{1,4}[a-z]?|\d{3,4}(?:ti)?)$")
_TYPE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")


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


def valid_type(text: str) -> bool:
    """Whether ``text`` can name a GPU type (what a user may write in TYPE)."""
    return bool(_TYPE.match(text))
