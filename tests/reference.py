"""Reference implementations and data used only by the tests and benchmarks (not shipped in the package):
scikit-learn's k-means on the same problem as `kmeans_1d`, scikit-learn's digits as an offline dataset, and
plain training of every parameter (the benchmarks' uncompressed reference model)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from alexcompress.compression.quantization import initial_centroids
from alexcompress.train.config import TrainConfig
from alexcompress.train.data import resolve_device
from alexcompress.train.hooks import Hooks
from alexcompress.train.log import TrainingLog
from alexcompress.train.trainer import _train

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset


def kmeans_sklearn(values: np.ndarray, k: int, *, init: str = "linear", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's KMeans on the same problem (same init, n_init=1): the reference `kmeans_1d` is checked
    and benchmarked against. Returns (sorted centroids, labels)."""
    from sklearn.cluster import KMeans

    x = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    start = np.unique(initial_centroids(np.sort(x[:, 0]), k, init, seed))
    model = KMeans(n_clusters=start.size, init=start.reshape(-1, 1), n_init=1, random_state=seed, max_iter=300, tol=0.0)
    model.fit(x)
    order = np.argsort(model.cluster_centers_[:, 0])
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return model.cluster_centers_[order, 0], rank[model.labels_]


def digits(image_size: int = 64, test_fraction: float = 0.25, seed: int = 0) -> tuple["Dataset", "Dataset"]:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), upsampled to `image_size` (AlexNet
    needs at least 63 pixels) as 3-channel tensors; a stratified train/test split."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch.nn.functional import interpolate
    from torch.utils.data import TensorDataset

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = ((images - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=bunch.target)
    return TensorDataset(images[train_idx], labels[train_idx]), TensorDataset(images[test_idx], labels[test_idx])


def train_from_scratch(model: "torch.nn.Module", dataset: "Dataset", config: TrainConfig, log: Optional[TrainingLog] = None) -> None:
    """Plain training of every parameter (the benchmark's reference model)."""

    class _All(Hooks):
        def parameters(self, model: "torch.nn.Module") -> list:
            return list(model.parameters())

    model.to(resolve_device(config.device))
    _train(model, _All(), dataset, config, stage="train", log=log)
