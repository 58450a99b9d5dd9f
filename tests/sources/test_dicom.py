"""DICOM images written here with pydicom: grey, RGB, multi-frame, spacing, labels, bad files."""
from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

from augengine.sources import discover, load_sample, read_dicom
from augengine.sources.dicom import _read_pixels
from tests.sources.helpers import one_line_error as _error


def write_dicom(path, pixels, photometric="MONOCHROME2", frames=None, bits_stored=None,
                pixel_spacing=None, region_cm=None):
    """Uncompressed explicit-VR little-endian ultrasound image; ``frames`` for multi-frame."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    colour = photometric in ("RGB", "YBR_FULL")
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    if colour:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[1:3] if frames else pixels.shape[:2]
    if frames:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if pixel_spacing:
        ds.PixelSpacing = list(pixel_spacing)
    if region_cm:
        region = Dataset()
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX, region.PhysicalDeltaY = region_cm
        ds.SequenceOfUltrasoundRegions = [region]
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


GREY = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20


def test_mono_with_pixel_spacing(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", GREY, pixel_spacing=(0.1, 0.2))
    (sample,) = read_dicom(path, label="benign")
    assert (sample.sample_id, sample.source_id, sample.label) == ("a", "a", 0)
    assert sample.image.dtype == np.uint8 and np.array_equal(sample.image, GREY)
    assert sample.meta["spacing_mm"] == (0.1, 0.2), sample.meta["spacing_mm"]
    assert sample.roi is None and sample.meta["photometric_interpretation"] == "MONOCHROME2"


def test_rgb_with_ultrasound_region(tmp_path):
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 2] = 200                                   # blue 200 -> 0.114 * 200 = 22.8 -> 23
    # Region deltas in cm win over PixelSpacing: 0.01 cm rows, 0.02 cm columns = 0.1, 0.2 mm.
    path = write_dicom(tmp_path / "b.dcm", rgb, "RGB", pixel_spacing=(9.0, 9.0),
                       region_cm=(0.02, 0.01))
    (sample,) = read_dicom(path, label=1)
    assert (sample.image == 23).all(), f"blue 200 should give luma 23, got {sample.image[0, 0]}"
    assert sample.meta["spacing_mm"] == pytest.approx((0.1, 0.2)), sample.meta["spacing_mm"]
    assert sample.label == 1


def test_multi_frame_gives_one_sample_per_frame(tmp_path):
    cine = np.stack([GREY, GREY + 1, GREY + 2])
    path = write_dicom(tmp_path / "cine.dcm", cine, frames=3)
    samples = read_dicom(path, label="malignant")
    assert [s.sample_id for s in samples] == ["cine/frame0000", "cine/frame0001", "cine/frame0002"]
    assert {s.source_id for s in samples} == {"cine"}
    for k, sample in enumerate(samples):
        assert np.array_equal(sample.image, GREY + k), f"frame {k} has the wrong pixels"
        assert sample.meta["frame"] == k


def test_frames_share_one_file_read(tmp_path):
    path = write_dicom(tmp_path / "cine.dcm", np.stack([GREY] * 4), frames=4)
    _read_pixels.cache_clear()
    for ref in discover("dicom", str(path), label=0):
        load_sample(ref)
    info = _read_pixels.cache_info()
    assert info.misses == 1 and info.hits == 3, f"4 frames read the file {info.misses} times"


def test_monochrome1_is_inverted_and_12_bit_is_scaled(tmp_path):
    twelve = np.array([[0, 4095], [2048, 4095]], np.uint16)
    path = write_dicom(tmp_path / "m1.dcm", twelve, "MONOCHROME1", bits_stored=12)
    (sample,) = read_dicom(path, label=0)
    # 12-bit: round(v * 255 / 4095) = 0, 255, 128; MONOCHROME1 then inverts: 255, 0, 127.
    assert sample.image.tolist() == [[255, 0], [127, 0]], sample.image.tolist()


def test_directory_labels_from_folders(tmp_path):
    write_dicom(tmp_path / "benign" / "p1" / "x.dcm", GREY)
    write_dicom(tmp_path / "malignant" / "y", GREY)      # no extension, still DICOM
    (tmp_path / "notes.txt").write_text("skipped: not a DICOM name")
    samples = read_dicom(tmp_path)
    assert [(s.sample_id, s.label) for s in samples] == [("benign/p1/x", 0), ("malignant/y", 1)]


def test_no_label(tmp_path):
    path = write_dicom(tmp_path / "scans" / "a.dcm", GREY)
    message = _error(lambda: read_dicom(path))
    assert f"{path}: no label; pass label=" in message, message


def test_bad_label(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", GREY)
    assert "label must be one of" in _error(lambda: read_dicom(path, label="cyst"))


def test_not_dicom(tmp_path):
    path = tmp_path / "benign" / "fake.dcm"
    path.parent.mkdir()
    path.write_bytes(b"\0" * 200)
    refs = discover("dicom", str(tmp_path))
    assert [r.sample_id for r in refs] == ["benign/fake"]
    message = _error(lambda: load_sample(refs[0]))
    assert f"{path}: not a DICOM file" in message, message


def test_truncated_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.zeros((64, 64), np.uint8) + 7)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2000])
    message = _error(lambda: read_dicom(path, label=0))
    assert f"{path}: cannot decode pixel data" in message, message


def test_unsupported_photometric(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", GREY, "PALETTE COLOR")
    message = _error(lambda: read_dicom(path, label=0))
    assert "unsupported photometric interpretation 'PALETTE COLOR'" in message, message


def test_missing_path_and_empty_directory(tmp_path):
    assert "no such file or directory" in _error(lambda: read_dicom(tmp_path / "x.dcm", 0))
    assert "holds no DICOM files" in _error(lambda: read_dicom(tmp_path, 0))
