"""Where each dataset comes from: the files its owners publish (URL, checksum), or how to place it by hand.

``SOURCES`` covers every name in ``common.datasets.DATASETS``. A source is one of three kinds:

- downloadable: ``fetch(name)`` downloads each file (trying its mirrors in order), checks its checksum and
  extracts archives into ``dataset_folder(name)``, giving the layout the reader expects;
- manual (``manual`` says why): the owners' terms, a sign-in page or a withdrawal rule out automatic download;
  the user places the files and ``fetch`` then checks and extracts them;
- generated (``generated`` says how): the suite makes the data itself and needs no file.

Checksums are the ones published with the files or by torchvision, pytorch-ood, anomalib, edadaltocg/detectors,
TensorFlow Datasets or avalanche (cited per entry); None means no published checksum was found and the file is
accepted unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.datasets import dataset_folder
from common.download import download, extract, extraction_interrupted, verify_checksum
from common.errors import DataError, DownloadError, MissingDataError


@dataclass(frozen=True)
class RemoteFile:
    """One file as its owners publish it, saved as ``<dataset folder>/<filename>``.

    Attributes:
        filename: Name of the file in the dataset folder.
        urls: Mirrors, tried in order; for manual sources, where a person can get the file.
        md5: Published hex md5 digest, or None.
        sha256: Published hex sha256 digest, or None.
        unpacks_to: For archives, the path (relative to the dataset folder) extraction creates; None for files
            that stay as they are.
    """

    filename: str
    urls: tuple[str, ...] = ()
    md5: str | None = None
    sha256: str | None = None
    unpacks_to: str | None = None

    def in_place(self, folder: Path) -> Path:
        """The path whose existence shows this file is in place: the file itself, or what it unpacks to."""
        return folder / (self.unpacks_to or self.filename)


@dataclass(frozen=True)
class DatasetSource:
    """Where dataset ``name`` comes from; exactly one of downloadable ``files``, ``manual``, ``generated``."""

    name: str
    homepage: str = ""
    files: tuple[RemoteFile, ...] = ()
    manual: str | None = None
    generated: str | None = None


# MNIST and Fashion-MNIST: file names and md5 as listed by torchvision.datasets.MNIST / FashionMNIST. The
# ossci-datasets S3 copy comes first because yann.lecun.com has refused plain downloads at times.
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# ODIN's out-of-distribution sets (facebookresearch/odin README, Dropbox). The /s/raw/ form of a Dropbox link
# serves the file instead of a preview page. md5 of LSUN, LSUN_resize, Imagenet, Imagenet_resize from
# pytorch-ood (dataset/img/odin.py), iSUN from edadaltocg/detectors (data/isun.py); each archive unpacks to
# one folder named like it.
_DROPBOX = "https://www.dropbox.com/s/raw/"
_TINY_IMAGES_WITHDRAWN = (
    "its creators withdrew 80 Million Tiny Images in June 2020 over offensive labels and images "
    "(https://groups.csail.mit.edu/vision/TinyImages/), so the suite never downloads it, but a research copy you "
    "already hold can be used as is (no checksum was ever published for it)"
)


def _mirrored(mirrors: tuple[str, ...], md5_by_name: dict[str, str]) -> tuple[RemoteFile, ...]:
    return tuple(
        RemoteFile(name, tuple(mirror + name for mirror in mirrors), md5=md5) for name, md5 in md5_by_name.items()
    )


def _odin(archive: str, dropbox_id: str, md5: str) -> tuple[RemoteFile, ...]:
    folder = archive.removesuffix(".tar.gz")
    return (RemoteFile(archive, (f"{_DROPBOX}{dropbox_id}/{archive}",), md5=md5, unpacks_to=folder),)


# LSUN scene validation LMDBs as the LSUN authors publish them (fyu/lsun download.py); sha256 from TensorFlow
# Datasets (tensorflow_datasets/url_checksums/lsun.txt). Each zip unpacks to <category>_val_lmdb/.
_LSUN_SCENES = "http://dl.yf.io/lsun/scenes/"
_LSUN_VAL_SHA256 = {
    "bedroom": "5d022e781b241c25ec2e1f1f769afcdb8091d7fd58362667aec03137b8114b12",
    "bridge": "83216a2974d6068c2e1d18086006e7380ff58540216f955ce87fe049b460cb0d",
    "church_outdoor": "34635b7547a3e51a15f942a4a4082dd6bc9cca381a953515cb2275c0eed50584",
    "classroom": "5e0e9a375d94091dfe1fa3be87d4a92f41c03f1c0b8e376acc7e05651de512d7",
    "conference_room": "927c94df52e10b9b374748c2b83b28b5860e946b3186dfd587985e274834650f",
    "dining_room": "bd604d4b91bb5a9611d4e0b85475efd20758390d1a4eb57b53973fcbb5aa8ab6",
    "kitchen": "329165f35ec61c4cf49f809246de300b8baad3ffcbda1ac30c27bdd32c84369a",
    "living_room": "30a23d9a3db5414e9c97865f60ffb2ee973bfa658a23dbca7188ea514c97c9fc",
    "restaurant": "efaa7bcb898ad6cb73b07b89fec3a9c670f4622912eea22fab3986c2cf9a1c20",
    "tower": "7f5257847bc01f4e40d4a1b3e24dd8fcd37063f12ca8cf31e726c2ee0b1ae104",
}
_ODIN_HOME = "https://github.com/facebookresearch/odin"
_SVHN = "http://ufldl.stanford.edu/housenumbers/"
SOURCES: dict[str, DatasetSource] = {
    source.name: source
    for source in [
        DatasetSource("mnist", "http://yann.lecun.com/exdb/mnist/", _mirrored(_MNIST_MIRRORS, _MNIST_MD5)),
        DatasetSource(
            "fashion-mnist",
            "https://github.com/zalandoresearch/fashion-mnist",
            _mirrored(_FASHION_MIRRORS, _FASHION_MD5),
        ),
        # CIFAR archive md5: published on the CIFAR page and in torchvision.datasets.CIFAR10 / CIFAR100.
        DatasetSource(
            "cifar10",
            "https://www.cs.toronto.edu/~kriz/cifar.html",
            (
                RemoteFile(
                    "cifar-10-python.tar.gz",
                    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                    md5="c58f30108f718f92721af3b95e74349a",
                    unpacks_to="cifar-10-batches-py",
                ),
            ),
        ),
        DatasetSource(
            "cifar100",
            "https://www.cs.toronto.edu/~kriz/cifar.html",
            (
                RemoteFile(
                    "cifar-100-python.tar.gz",
                    ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                    md5="eb9058c3a382ffc7106e4002c42a8d85",
                    unpacks_to="cifar-100-python",
                ),
            ),
        ),
        # SVHN cropped digits (non-commercial use only); md5 from torchvision.datasets.SVHN.
        DatasetSource(
            "svhn",
            _SVHN,
            tuple(
                RemoteFile(f"{split}_32x32.mat", (f"{_SVHN}{split}_32x32.mat",), md5=md5)
                for split, md5 in (
                    ("train", "e26dedcc434d2e4c54c9b2d4a06d8373"),
                    ("test", "eb5a983be6a315427106f1b164d9cef3"),
                    ("extra", "a93ce644f1a588dc4d68dda5feec44a7"),
                )
            ),
        ),
        DatasetSource(
            "lsun",
            "https://www.yf.io/p/lsun",
            tuple(
                RemoteFile(
                    f"{category}_val_lmdb.zip",
                    (f"{_LSUN_SCENES}{category}_val_lmdb.zip",),
                    sha256=sha256,
                    unpacks_to=f"{category}_val_lmdb",
                )
                for category, sha256 in _LSUN_VAL_SHA256.items()
            ),
        ),
        DatasetSource(
            "lsun-crop", _ODIN_HOME, _odin("LSUN.tar.gz", "fhtsw1m3qxlwj6h", "458a0a0ab8e5f1cb4516d7400568e460")
        ),
        DatasetSource(
            "lsun-resize",
            _ODIN_HOME,
            _odin("LSUN_resize.tar.gz", "moqh2wh8696c3yl", "278b7b31c8cb7e804a1465a8ce03a2dc"),
        ),
        # TinyImageNet-200 from Stanford CS231n; md5 as in avalanche (benchmarks/datasets/tiny_imagenet).
        DatasetSource(
            "tinyimagenet",
            "http://cs231n.stanford.edu/",
            (
                RemoteFile(
                    "tiny-imagenet-200.zip",
                    ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
                    md5="90528d7ca1a48142e341f4ef8d21d0de",
                    unpacks_to="tiny-imagenet-200",
                ),
            ),
        ),
        DatasetSource(
            "tinyimagenet-crop",
            _ODIN_HOME,
            _odin("Imagenet.tar.gz", "avgm2u562itwpkl", "7c0827e4246c3718a5ee076e999e52e5"),
        ),
        DatasetSource(
            "tinyimagenet-resize",
            _ODIN_HOME,
            _odin("Imagenet_resize.tar.gz", "kp3my3412u5k9rl", "0f9ff11d45babf2eff5fe12281d1ac31"),
        ),
        DatasetSource("isun", _ODIN_HOME, _odin("iSUN.tar.gz", "ssz7qxfqae0cca5", "be77b0f2c26fda898afac5f99645ee70")),
        # Describable Textures r1.0.1; md5 from torchvision.datasets.DTD (pytorch-ood's Textures agrees).
        DatasetSource(
            "textures",
            "https://www.robots.ox.ac.uk/~vgg/data/dtd/",
            (
                RemoteFile(
                    "dtd-r1.0.1.tar.gz",
                    ("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",),
                    md5="fff73e5086ae6bdbea199a49dfb8a4c1",
                    unpacks_to="dtd",
                ),
            ),
        ),
        # CelebA: file names, Google Drive ids and md5 from torchvision.datasets.CelebA.
        DatasetSource(
            "celeba",
            "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
            (
                RemoteFile(
                    "img_align_celeba.zip",
                    ("https://drive.google.com/file/d/0B7EVK8r0v71pZjFTYXZWM3FlRnM/view",),
                    md5="00d2c5bc6d35e252742224ab0c1e8fcb",
                    unpacks_to="img_align_celeba",
                ),
                RemoteFile(
                    "list_eval_partition.txt",
                    ("https://drive.google.com/file/d/0B7EVK8r0v71pY0NSMzRuSXJEVkk/view",),
                    md5="d32c9cbf5e040fd4025c592c306e6668",
                ),
            ),
            manual=(
                "its owners share it through Google Drive, whose quota and confirmation page defeat scripts, for "
                "non-commercial research only, so take the files from the links and terms on "
                "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
            ),
        ),
        # MVTec AD: sha256 of the official archive as published by anomalib (MVTecAD DOWNLOAD_INFO).
        DatasetSource(
            "mvtec",
            "https://www.mvtec.com/company/research/datasets/mvtec-ad",
            (
                RemoteFile(
                    "mvtec_anomaly_detection.tar.xz",
                    ("https://www.mvtec.com/company/research/datasets/mvtec-ad",),
                    sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
                    unpacks_to="bottle",
                ),
            ),
            manual=(
                "it is licensed CC BY-NC-SA 4.0 and its download page asks you to accept those terms first, so get "
                "the archive from https://www.mvtec.com/company/research/datasets/mvtec-ad"
            ),
        ),
        DatasetSource(
            "tiny-images",
            "https://groups.csail.mit.edu/vision/TinyImages/",
            # 79,302,017 images × 3072 bytes; no checksum was ever published (hence None).
            (RemoteFile("tiny_images.bin"),),
            manual=_TINY_IMAGES_WITHDRAWN,
        ),
        DatasetSource(
            "tiny-images-subset",
            "https://github.com/boschresearch/hierarchical_anomaly_detection",
            manual=(
                "run `python invglow/create_tiny.py`, which cuts it out of tiny_images.bin (see tiny-images) and "
                "writes tiny_subset.npy, tiny_subset_indices.npy and tiny_subset.json"
            ),
        ),
        # Hendrycks' outlier-exposure subset; md5 from pytorch-ood (dataset/img/tinyimages.py, TinyImages300k).
        DatasetSource(
            "tiny-images-300k",
            "https://github.com/hendrycks/outlier-exposure",
            (
                RemoteFile(
                    "300K_random_images.npy",
                    ("https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy",),
                    md5="64ca64357de98351f28454274a112dc3",
                ),
            ),
        ),
        DatasetSource(
            "digits",
            "https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
            generated="it is read from the copy of the UCI digits that ships inside scikit-learn",
        ),
        DatasetSource("uniform-noise", generated="the images are drawn from a seeded uniform distribution"),
        DatasetSource("gaussian-noise", generated="the images are drawn from a seeded Gaussian distribution"),
        DatasetSource("shapes", generated="the shapes are drawn by the suite from a seed"),
    ]
}


def how_to_get(name: str, folder: str | Path | None = None) -> str:
    """One sentence telling the user how to obtain dataset ``name``: download command or manual placement.

    Args:
        name: A dataset name from ``common.datasets.DATASETS``.
        folder: The folder the reader looked in; defaults to ``dataset_folder(name)``.
    """
    source = _source(name)
    folder = Path(folder) if folder is not None else dataset_folder(name)
    if source.generated is not None:
        return f"{name} needs no files: {source.generated}."
    if source.manual is not None and not source.files:
        return f"{name} is not downloaded automatically: {source.manual}; it belongs in {folder}."
    pronoun = "it" if len(source.files) == 1 else "them"
    archives = [file for file in source.files if file.unpacks_to is not None]
    if source.manual is not None:
        steps = [step for step, needed in (("check", _has_checksum(source)), ("extract", archives)) if needed]
        then = f", then run `python main.py download {name}` to {' and '.join(steps)} {pronoun}" if steps else ""
        names = _join([file.filename for file in source.files])
        return f"{name} is not downloaded automatically: {source.manual}; put {names} into {folder}{then}."
    listing = _join([f"{file.urls[0]} ({_checksum_text(file)})" for file in source.files])
    if not archives:
        action = f"place {pronoun} unchanged in {folder}"
    else:
        unpacked = _join([str(file.in_place(folder)) for file in archives])
        extracting = "extract" if len(archives) == len(source.files) else "put, extracting the archives,"
        verb = "exists" if len(archives) == 1 else "exist"
        action = f"{extracting} {pronoun} into {folder} so that {unpacked} {verb}"
    return f"Run `python main.py download {name}` or download {listing}, then {action}."


def fetch(name: str, root: str | Path | None = None, *, progress: bool = True) -> Path:
    """Put dataset ``name`` into ``dataset_folder(name, root)`` in the layout its reader expects.

    Downloadable files are downloaded (checksummed, resumable, mirrors tried in order) and archives extracted;
    a file whose archive was already extracted is skipped, unless that extraction was killed before it finished
    (``common.download.extraction_interrupted``): then it is extracted again. Files of manual sources must have
    been placed by hand; they are checked and extracted. Generated sets need nothing.

    Returns:
        The dataset folder.

    Raises:
        MissingDataError: a manual source's file is not in place (the message says where to get it).
        DownloadError: every mirror of a file failed, or a checksum did not match.
        DataError: an archive is unsafe or did not unpack to what the table says.
    """
    source = _source(name)
    folder = dataset_folder(name, root)
    if source.manual is not None and not source.files:
        raise MissingDataError(folder, how_to_get(name, folder))
    for file in source.files:
        target = folder / file.filename
        if (
            file.unpacks_to is not None
            and file.in_place(folder).exists()
            and not extraction_interrupted(target, folder)
        ):
            continue
        if source.manual is None:
            _download_from_mirrors(file, target, progress)
        elif target.is_file():
            verify_checksum(target, file.md5, file.sha256)
        else:
            raise MissingDataError(target, how_to_get(name, folder))
        if file.unpacks_to is not None:
            _extract_checked(file, target, folder)
    return folder


def _download_from_mirrors(file: RemoteFile, target: Path, progress: bool) -> None:
    errors: list[DownloadError] = []
    for url in file.urls:
        try:
            download(url, target, md5=file.md5, sha256=file.sha256, progress=progress)
            return
        except DownloadError as error:
            errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    raise DownloadError(target, "every mirror failed: " + " | ".join(str(error) for error in errors))


def _extract_checked(file: RemoteFile, archive: Path, folder: Path) -> None:
    extract(archive, folder)
    if not file.in_place(folder).exists():
        found = ", ".join(sorted(entry.name for entry in folder.iterdir()))
        raise DataError(archive, f"unpacked, but {file.unpacks_to!r} is not among the results ({found})")


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _has_checksum(source: DatasetSource) -> bool:
    return any(file.md5 or file.sha256 for file in source.files)


def _checksum_text(file: RemoteFile) -> str:
    if file.md5:
        return f"md5 {file.md5}"
    if file.sha256:
        return f"sha256 {file.sha256}"
    return "no published checksum"


def _source(name: str) -> DatasetSource:
    if name not in SOURCES:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


__all__ = ["SOURCES", "DatasetSource", "RemoteFile", "fetch", "how_to_get"]
