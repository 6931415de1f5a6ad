"""AlexNet (torchvision's layout) with the paper's layer names (conv1..fc8) and its Table 4 keep rates as the
preset `paper`."""

from __future__ import annotations

from collections import OrderedDict

from alexcompress.models.architecture import ShapeTable
from alexcompress.models.torchvision_archs import TableArch

#: The paper's AlexNet layer names and the torchvision state-dict keys they stand for.
ALEXNET_LAYERS: "OrderedDict[str, str]" = OrderedDict(
    (name, f"{prefix}.weight")
    for name, prefix in (
        ("conv1", "features.0"),
        ("conv2", "features.3"),
        ("conv3", "features.6"),
        ("conv4", "features.8"),
        ("conv5", "features.10"),
        ("fc6", "classifier.1"),
        ("fc7", "classifier.4"),
        ("fc8", "classifier.6"),
    )
)

#: Table 4 of the paper: the fraction of weights kept after pruning, per AlexNet layer.
PAPER_KEEP_RATES: dict[str, float] = {
    "conv1": 0.84,
    "conv2": 0.38,
    "conv3": 0.35,
    "conv4": 0.37,
    "conv5": 0.37,
    "fc6": 0.09,
    "fc7": 0.09,
    "fc8": 0.25,
}


def alexnet_table(num_classes: int) -> "OrderedDict[str, tuple[int, ...]]":
    t = ShapeTable()
    for index, out, inp, k in ((0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3)):
        t.conv(f"features.{index}", out, inp, k)
    t.linear("classifier.1", 4096, 256 * 6 * 6)
    t.linear("classifier.4", 4096, 4096)
    t.linear("classifier.6", num_classes, 4096)
    return t.shapes


ALEXNET = TableArch("alexnet", alexnet_table, "classifier.6.weight", ALEXNET_LAYERS, {"paper": PAPER_KEEP_RATES})
