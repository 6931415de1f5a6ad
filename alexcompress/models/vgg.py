"""VGG-16 (torchvision's layout)."""

from __future__ import annotations

from collections import OrderedDict

from alexcompress.models.architecture import ShapeTable
from alexcompress.models.torchvision_archs import TableArch


def vgg16_table(num_classes: int) -> "OrderedDict[str, tuple[int, ...]]":
    t = ShapeTable()
    index, channels = 0, 3
    for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if item == "M":
            index += 1
        else:
            t.conv(f"features.{index}", int(item), channels, 3)
            channels = int(item)
            index += 2
    t.linear("classifier.0", 4096, 512 * 7 * 7)
    t.linear("classifier.3", 4096, 4096)
    t.linear("classifier.6", num_classes, 4096)
    return t.shapes


VGG16 = TableArch("vgg16", vgg16_table, "classifier.6.weight")
