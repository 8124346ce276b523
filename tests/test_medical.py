"""Medical vertical: phantoms -> UNet -> Dice; Decathlon checks; bundle, API and folder runs."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("monai")

from fastapi.testclient import TestClient  # noqa: E402

from verticals.configs import compose  # noqa: E402
from verticals.core import pipeline  # noqa: E402
from verticals.core.batch import predict_folder  # noqa: E402
from verticals.core.bundle import load_bundle, write_bundle  # noqa: E402
from verticals.core.errors import UserError  # noqa: E402
from verticals.core.serving import create_app  # noqa: E402
from verticals.medical.data import load_splits  # noqa: E402
from verticals.medical.decathlon import check_cases, read_task  # noqa: E402
from verticals.medical.metrics import dice_per_label  # noqa: E402
from verticals.medical.synthetic import phantom  # noqa: E402

# Small enough for CI's two cores, big enough that the UNet must learn the organ's shape.
TINY = [
    "data.n_cases=10",
    "data.shape=[32,32,32]",
    "data.roi_size=[24,24,24]",
    "data.samples_per_volume=4",
    "training.epochs=40",
    "training.val_every=10",
    "training.batch_size=4",
    "training.cpu_minutes=null",  # the quality asserted needs all 40 epochs, however busy
]


def medical_cfg(root: Path, *overrides: str):
    return compose("train", "medical", [f"paths.root_dir={root}", "trainer.device=cpu", *overrides])


@pytest.fixture(scope="session")
def medical_run(tmp_path_factory: pytest.TempPathFactory) -> pipeline.TrainResult:
    return pipeline.train(medical_cfg(tmp_path_factory.mktemp("medical"), *TINY))


@pytest.fixture(scope="session")
def medical_bundle(medical_run: pipeline.TrainResult, tmp_path_factory: pytest.TempPathFactory):
    return load_bundle(write_bundle(medical_run.run_dir, tmp_path_factory.mktemp("bundles")))


def write_nifti(path: Path, array: np.ndarray, spacing: float = 1.0) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([spacing, spacing, spacing, 1.0])), path)
    return path


def test_phantoms_plant_structures_a_threshold_cannot_separate() -> None:
    image, label = phantom((48, 48, 48), np.random.default_rng(3))
    assert set(np.unique(label)) >= {0, 1, 3}
    organ = image[label == 1].mean()
    # distractors as dense as the organ exist outside it: intensity alone over-segments
    lookalike = (np.abs(image - organ) < 30) & (label == 0)
    assert lookalike.sum() > 0.2 * (label == 1).sum()
    if (label == 2).any():  # the lesion is as dense as plain tissue
        tissue = image[(label == 0) & (image > -500)].mean()
        assert abs(image[label == 2].mean() - tissue) < 30


def test_training_learns_the_organ(medical_run: pipeline.TrainResult) -> None:
    m = medical_run.metrics
    assert m["dice_organ"] > 0.6, m
    assert m["dice_mean"] > 0.3, m
    assert np.isfinite(m["hd95_organ"])
    run = medical_run.run_dir
    for name in (
        "cases.csv",
        "history.csv",
        "plots/overlays.png",
        "plots/training_curve.png",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "model/weights.pt",
    ):
        assert (run / name).is_file(), name
    assert "Dice" in (run / "model_card.md").read_text()


def test_resume_continues_the_run(medical_run: pipeline.TrainResult, tmp_path: Path) -> None:
    # Only the run and the new epoch count: data, split and network come from the run.
    resume = f"training.resume={medical_run.run_dir}"
    result = pipeline.train(
        medical_cfg(tmp_path, "training.epochs=41", "training.val_every=10", resume)
    )
    history = (result.run_dir / "history.csv").read_text().strip().splitlines()
    assert len(history) == 1 + 41  # header + the first run's 40 epochs + one more
    assert [c["name"] for c in result.splits.test] == [c["name"] for c in medical_run.splits.test]
    assert result.metrics["dice_organ"] > 0.5
    with pytest.raises(UserError, match="finished 40 epochs"):
        pipeline.train(medical_cfg(tmp_path, "training.epochs=30", resume))
    best = medical_run.run_dir / "checkpoints" / "best.pt"
    with pytest.raises(UserError, match="best.pt holds weights only"):
        pipeline.train(medical_cfg(tmp_path, "training.epochs=50", f"training.resume={best}"))


def test_bundle_round_trip_gives_identical_masks(
    medical_run: pipeline.TrainResult, medical_bundle, tmp_path: Path
) -> None:
    vertical = medical_run.vertical
    image = Path(medical_run.splits.test[0]["image"])
    direct = vertical.predict_path(medical_run.model, image)
    packaged = medical_bundle.vertical.predict_path(medical_bundle.model, image)
    a = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(direct.content)).dataobj)
    b = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(packaged.content)).dataobj)
    np.testing.assert_array_equal(a, b)
    assert a.shape == nib.load(image).shape  # in the input's own grid
    assert direct.summary == packaged.summary
    truth = np.asarray(nib.load(medical_run.splits.test[0]["label"]).dataobj)
    assert dice_per_label(a, truth, {1: "organ"})["organ"] > 0.5


def test_api_takes_a_volume_and_returns_mask_and_volumes(
    medical_run: pipeline.TrainResult, medical_bundle, tmp_path: Path
) -> None:
    client = TestClient(create_app(medical_bundle))
    path = Path(medical_run.splits.test[0]["image"])
    files = {"file": (path.name, path.read_bytes(), "application/gzip")}
    body = client.post("/predict", files=files).json()
    assert set(body["prediction"]["volumes_ml"]) == {"organ", "lesion", "vessel"}
    assert body["prediction"]["volumes_ml"]["organ"] > 0
    assert body["output_file"]["name"] == path.name
    raw = client.post("/predict?format=file", files=files)
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/gzip"
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(raw.content))
    assert mask.shape == nib.load(path).shape
    assert json.loads(raw.headers["x-prediction"])["shape"] == list(mask.shape)
    meta = client.get("/metadata").json()
    assert meta["schema"]["request"]["file_endings"] == [".nii.gz", ".nii", ".zip"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.nii.gz", b"not a volume at all", "broken.nii.gz is not a whole gzip file"),
        ("scan.png", b"\x89PNG", "must end with one of"),
        ("empty.nii", b"", "is empty"),
    ],
)
def test_api_rejects_bad_files(medical_bundle, name: str, content: bytes, message: str) -> None:
    client = TestClient(create_app(medical_bundle))
    response = client.post("/predict", files={"file": (name, content)})
    assert response.status_code == 422
    assert message in response.json()["message"]


def test_api_rejects_a_2d_image(medical_bundle, tmp_path: Path) -> None:
    flat = write_nifti(tmp_path / "slice.nii.gz", np.zeros((32, 32), dtype=np.int16))
    client = TestClient(create_app(medical_bundle))
    response = client.post("/predict", files={"file": (flat.name, flat.read_bytes())})
    assert response.status_code == 422
    assert "expected a 3-D volume" in response.json()["message"]


def test_masks_come_back_in_the_input_orientation(
    medical_run: pipeline.TrainResult, tmp_path: Path
) -> None:
    """The same scan stored LPS (x and y flipped, affine to match) gets the flipped mask."""
    vertical, model = medical_run.vertical, medical_run.model
    ras = nib.load(medical_run.splits.test[0]["image"])
    data = np.asarray(ras.dataobj)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = np.array(data.shape[:2]) - 1  # voxel i -> n-1-i
    lps = nib.Nifti1Image(data[::-1, ::-1].copy(), ras.affine @ flip)
    nib.save(lps, tmp_path / "lps.nii.gz")

    def mask(path: Path) -> nib.Nifti1Image:
        out = vertical.predict_path(model, path)
        return nib.Nifti1Image.from_bytes(gzip.decompress(out.content))

    a, b = mask(Path(medical_run.splits.test[0]["image"])), mask(tmp_path / "lps.nii.gz")
    np.testing.assert_allclose(b.affine, lps.affine, atol=1e-5)
    agree = (np.asarray(b.dataobj)[::-1, ::-1] == np.asarray(a.dataobj)).mean()
    assert agree > 0.999, agree


def test_predict_folder_writes_masks_and_names_failures(
    medical_run: pipeline.TrainResult, medical_bundle, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    files = medical_run.vertical.example_files(medical_run.splits, 2, inputs)
    (inputs / "corrupt.nii.gz").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"1 of 3 inputs failed.*corrupt\.nii\.gz"):
        predict_folder(medical_bundle, inputs, tmp_path / "out", progress=False)
    for f in files:
        assert (tmp_path / "out" / f.name).is_file()
    table = (tmp_path / "out" / "predictions.csv").read_text()
    assert "volumes_ml_organ" in table and "corrupt.nii.gz" in table


def test_predict_paths_equals_predict_path_each(
    medical_run: pipeline.TrainResult, tmp_path: Path
) -> None:
    """A server's micro-batch gets each file's own answer; one bad file fails the call (the
    server retries the files one by one). No batching pays here: see `batches_well`."""
    vertical, model = medical_run.vertical, medical_run.model
    assert not vertical.batches_well(model)
    paths = vertical.example_files(medical_run.splits, 3, tmp_path / "in")
    batched = vertical.predict_paths(model, paths)
    single = [vertical.predict_path(model, p) for p in paths]
    assert [o.summary for o in batched] == [o.summary for o in single]
    assert [o.content for o in batched] == [o.content for o in single]
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt.nii.gz is not a whole gzip file"):
        vertical.predict_paths(model, [paths[0], corrupt, paths[1]])


def test_predict_folder_keeps_same_named_cases_apart(
    medical_run: pipeline.TrainResult, medical_bundle, tmp_path: Path
) -> None:
    image = Path(medical_run.splits.test[0]["image"])
    for site in ("site_a", "site_b"):
        (tmp_path / "in" / site).mkdir(parents=True)
        (tmp_path / "in" / site / "case.nii.gz").write_bytes(image.read_bytes())
    predict_folder(medical_bundle, tmp_path / "in", tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "site_a" / "case.nii.gz").is_file()
    assert (tmp_path / "out" / "site_b" / "case.nii.gz").is_file()
    with pytest.raises(UserError, match="inside input"):
        predict_folder(medical_bundle, tmp_path / "in", tmp_path / "in" / "masks", progress=False)


# --- Decathlon loader: every fixable problem is named by case ---


def decathlon(tmp_path: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    (tmp_path / "imagesTr").mkdir(parents=True)
    (tmp_path / "labelsTr").mkdir()
    training = []
    for name, (image, label) in cases.items():
        write_nifti(tmp_path / "imagesTr" / f"{name}.nii.gz", image)
        write_nifti(tmp_path / "labelsTr" / f"{name}.nii.gz", label)
        training.append(
            {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}
        )
    meta = {
        "labels": {"0": "background", "1": "organ"},
        "modality": {"0": "CT"},
        "training": training,
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    return tmp_path


def _pair(shape=(16, 16, 16), label_value: int = 1) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros(shape, dtype=np.uint8)
    label[4:8, 4:8, 4:8] = label_value
    return np.zeros(shape, dtype=np.int16), label


def test_decathlon_missing_file_names_the_case(tmp_path: Path) -> None:
    root = decathlon(tmp_path, {"case_a": _pair(), "case_b": _pair()})
    (root / "labelsTr" / "case_b.nii.gz").unlink()
    with pytest.raises(UserError, match=r"case_b \(label"):
        read_task(root)


def test_decathlon_shape_mismatch_names_the_case(tmp_path: Path) -> None:
    image, _ = _pair((16, 16, 16))
    _, label = _pair((16, 16, 12))
    root = decathlon(tmp_path, {"case_a": _pair(), "bad_case": (image, label)})
    with pytest.raises(UserError, match=r"case bad_case: image shape \(16, 16, 16\) differs"):
        check_cases(read_task(root), progress=False)


def test_decathlon_undeclared_label_names_the_case(tmp_path: Path) -> None:
    root = decathlon(tmp_path, {"case_a": _pair(), "odd": _pair(label_value=7)})
    with pytest.raises(UserError, match=r"case odd: .* value\(s\) 7 that dataset.json"):
        check_cases(read_task(root), progress=False)


def test_decathlon_labels_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    root = decathlon(tmp_path, {"case_a": _pair()})
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "edema", "2": "core", "4": "enhancing"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"numbered 0 \(background\) to 3 without gaps"):
        read_task(root)


def test_decathlon_label_in_another_grid_names_the_case(tmp_path: Path) -> None:
    root = decathlon(tmp_path, {"case_a": _pair(), "shifted": _pair()})
    label = nib.load(root / "labelsTr" / "shifted.nii.gz")
    moved = nib.Nifti1Image(np.asarray(label.dataobj), label.affine @ np.diag([-1, 1, 1, 1]))
    nib.save(moved, root / "labelsTr" / "shifted.nii.gz")
    with pytest.raises(UserError, match="case shifted: image and label lie in different"):
        check_cases(read_task(root), progress=False)


def test_decathlon_bad_root_and_json(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data.root is not set"):
        load_splits(medical_cfg(tmp_path, "data=decathlon", "data.root=null"))
    with pytest.raises(UserError, match="dataset.json is missing"):
        read_task(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_task(tmp_path)


def test_bad_training_numbers_fail_before_training(tmp_path: Path) -> None:
    # the schema's range check runs while composing: before any data is read
    with pytest.raises(UserError, match="training.val_every=0; expected a whole number >= 1"):
        medical_cfg(tmp_path, "debug=fast", "training.val_every=0")


def test_config_typos_fail_at_compose(tmp_path: Path) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        medical_cfg(tmp_path, "training.epoch=3")
    with pytest.raises(UserError, match="model.name='vnet'"):
        from verticals.medical.networks import build

        build({"name": "vnet"}, 1, 2)


@pytest.mark.skipif(not os.environ.get("VERTICALS_DATA_DIR"), reason="VERTICALS_DATA_DIR not set")
def test_reads_decathlon_hippocampus_as_is() -> None:
    root = Path(os.environ["VERTICALS_DATA_DIR"]) / "hippocampus"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    task = read_task(root)
    check_cases(task, progress=False)
    assert len(task.cases) == 200 and not task.is_ct
    assert task.labels == {0: "background", 1: "Anterior", 2: "Posterior"}


def write_dicom_series(volume: np.ndarray, folder: Path, spacing=(1.0, 1.0, 2.0)) -> None:
    """One CT slice per file, as a scanner exports a series."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality = "CT"
        ds.PatientID = "anon"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.ImagePositionPatient = [0.0, 0.0, k * spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = k + 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T.astype(np.int16)).tobytes()
        ds.save_as(folder / f"slice_{k:03d}.dcm", enforce_file_format=True)


def test_predicts_a_dicom_series_folder(medical_bundle, tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    image, _ = phantom((32, 32, 16), np.random.default_rng(5))
    write_dicom_series(image, tmp_path / "scans" / "patient_1")
    table = predict_folder(medical_bundle, tmp_path / "scans", tmp_path / "masks", progress=False)
    assert table["error"].isna().all(), table["error"].tolist()
    mask = nib.load(tmp_path / "masks" / "patient_1.nii.gz")
    assert mask.shape == (32, 32, 16)
    assert np.allclose(nib.affines.voxel_sizes(mask.affine), (1.0, 1.0, 2.0))


def test_a_zipped_dicom_series_is_one_upload(medical_bundle, tmp_path: Path) -> None:
    """A series is many files: zipped, it is one upload, answered as its folder is."""
    pytest.importorskip("pydicom")
    import zipfile

    image, _ = phantom((32, 32, 16), np.random.default_rng(5))
    write_dicom_series(image, tmp_path / "patient_1")
    with zipfile.ZipFile(tmp_path / "patient_1.zip", "w") as archive:
        for path in sorted((tmp_path / "patient_1").iterdir()):
            archive.write(path, f"../../etc/{path.name}")  # a hostile name lands inside
    folder = medical_bundle.vertical.predict_path(medical_bundle.model, tmp_path / "patient_1")
    client = TestClient(create_app(medical_bundle))
    with (tmp_path / "patient_1.zip").open("rb") as fh:
        answer = client.post("/predict", files={"file": ("patient_1.zip", fh)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["prediction"] == folder.summary
    assert not Path("/etc/slice_000.dcm").exists()
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
        archive.writestr("notes.txt", "no images here")
    with (tmp_path / "empty.zip").open("rb") as fh:
        refused = client.post("/predict", files={"file": ("empty.zip", fh)})
    assert refused.status_code == 422 and "holds no .dcm files" in refused.json()["message"]


@pytest.mark.parametrize(
    ("net", "roi"),
    [
        ({"name": "segresnet", "init_filters": 8, "dropout": 0.0}, 16),
        ({"name": "swinunetr", "feature_size": 12, "norm": "instance", "dropout": 0.0}, 64),
    ],
)
def test_other_networks_train_on_a_patch(net: dict, roi: int) -> None:
    import torch

    from verticals.medical.networks import build, divisor, min_side

    assert roi % divisor(net) == 0 and roi >= min_side(net)
    network = build(net, 1, 4)
    out = network(torch.randn(1, 1, roi, roi, roi))  # training mode: norms see the batch
    assert tuple(out.shape) == (1, 4, roi, roi, roi)
    out.mean().backward()


def test_local_weights_load_by_name_and_shape(tmp_path: Path) -> None:
    import torch

    from verticals.medical.networks import build, load_weights

    net = {
        "name": "unet",
        "channels": [8, 16],
        "strides": [2],
        "num_res_units": 1,
        "norm": "instance",
        "dropout": 0.0,
    }
    source = build(net, 1, 3)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "pretrained.pt")
    target = build(net, 1, 2)  # another label count: the output layer cannot load
    loaded, total = load_weights(target, tmp_path / "pretrained.pt")
    assert 0 < loaded < total
    first = next(iter(source.state_dict()))
    torch.testing.assert_close(target.state_dict()[first], source.state_dict()[first])
    with pytest.raises(UserError, match="never downloaded"):
        load_weights(target, tmp_path / "missing.pt")
