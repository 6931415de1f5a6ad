"""ResNet-18 (torchvision's layout)."""

from __future__ import annotations

from collections import OrderedDict

from alexcompress.models.architecture import ShapeTable
from alexcompress.models.torchvision_archs import TableArch


def resnet18_table(num_classes: int) -> "OrderedDict[str, tuple[int, ...]]":
    t = ShapeTable()
    t.conv("conv1", 64, 3, 7, bias=False)
    t.batchnorm("bn1", 64)
    inplanes = 64
    for layer, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            t.conv(f"{prefix}.conv1", planes, inplanes, 3, bias=False)
            t.batchnorm(f"{prefix}.bn1", planes)
            t.conv(f"{prefix}.conv2", planes, planes, 3, bias=False)
            t.batchnorm(f"{prefix}.bn2", planes)
            if block == 0 and inplanes != planes:
                t.conv(f"{prefix}.downsample.0", planes, inplanes, 1, bias=False)
                t.batchnorm(f"{prefix}.downsample.1", planes)
            inplanes = planes
    t.linear("fc", num_classes, 512)
    return t.shapes


RESNET18 = TableArch("resnet18", resnet18_table, "fc.weight")
