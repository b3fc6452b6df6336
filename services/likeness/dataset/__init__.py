"""Dataset preparation: raw photos in, a square, well-framed training set and a per-photo report out."""

from likeness.dataset.contact_sheet import contact_sheet, contact_sheet_jpeg
from likeness.dataset.options import PhotoInput, PrepareOptions
from likeness.dataset.prepare import NotEnoughPhotos, PreparedDataset, prepare_photos
from likeness.dataset.publish import load_dataset_images, load_dataset_manifest, publish_dataset
from likeness.dataset.report import PhotoReport

__all__ = [
    "NotEnoughPhotos",
    "PhotoInput",
    "PhotoReport",
    "PrepareOptions",
    "PreparedDataset",
    "contact_sheet",
    "contact_sheet_jpeg",
    "load_dataset_images",
    "load_dataset_manifest",
    "prepare_photos",
    "publish_dataset",
]
